import { afterEach, beforeEach, expect, it, vi } from "vitest";
import { RequestError, RtClient, roomUrl, type State } from "../src/client.js";
import { OutboxFullError } from "../src/outbox.js";
import { FakeSocket } from "./fakes.js";

beforeEach(() => {
  vi.useFakeTimers();
  FakeSocket.all = [];
});
afterEach(() => vi.useRealTimers());

function client(extra: object = {}) {
  let n = 0;
  const c = new RtClient({
    url: roomUrl("ws://h/ws"), getToken: () => `t${++n}`, WebSocket: FakeSocket as unknown as typeof WebSocket,
    baseMs: 100, capMs: 1000, ...extra,
  });
  const states: State[] = [];
  c.on("state", (e) => states.push(e.state));
  return { c, states };
}

async function up(socket: FakeSocket) {
  socket.open();
  await vi.runAllTicks();
  await Promise.resolve();
  socket.feed({ type: "auth_ok" });
}

it("authenticates first with a token fetched per connect, then resumes the room by URL", async () => {
  const { c, states } = client();
  const got: unknown[] = [];
  c.subscribe("lobby", { message: (d) => got.push(d) }).connect();
  const first = FakeSocket.last();
  expect(first.url).toBe("ws://h/ws/lobby");
  await up(first);
  expect(first.sent[0]).toEqual({ type: "auth", token: "t1" });
  first.feed({ type: "joined", room: "lobby", seq: 4, epoch: "E" });
  first.feed({ room: "lobby", seq: 5, epoch: "E", data: "five" });
  first.drop(1012, "restart");
  expect(c.state).toBe("disconnected");
  await vi.advanceTimersByTimeAsync(1000);
  const second = FakeSocket.last();
  expect(second.url).toBe("ws://h/ws/lobby?since=5&epoch=E");
  await up(second);
  expect(second.sent[0]).toEqual({ type: "auth", token: "t2" });
  second.feed({ room: "lobby", seq: 5, epoch: "E", data: "five" });
  second.feed({ room: "lobby", seq: 6, epoch: "E", data: "six" });
  expect(got).toEqual(["five", "six"]);
  expect(states).toEqual(["connecting", "connected", "disconnected", "connecting", "connected"]);
});

it("never retries a 1008, but reconnects at once with a fresh token when it expired", async () => {
  const { c } = client();
  const closed: unknown[] = [];
  c.on("closed", (e) => closed.push(e));
  c.connect();
  await up(FakeSocket.last());
  FakeSocket.last().drop(1008, "token expired");
  await vi.advanceTimersByTimeAsync(0);
  expect(FakeSocket.all.length).toBe(2);
  await up(FakeSocket.last());
  expect(FakeSocket.last().sent[0]).toEqual({ type: "auth", token: "t2" });
  FakeSocket.last().drop(1008, "auth failed");
  await vi.advanceTimersByTimeAsync(60_000);
  expect(FakeSocket.all.length).toBe(2);
  expect(c.state).toBe("closed");
  expect(closed).toEqual([{ code: 1008, reason: "auth failed" }]);
});

it("opens the breaker after maxFailures failures in a row", async () => {
  const { c } = client({ maxFailures: 3 });
  c.connect();
  for (let i = 0; i < 3; i++) {
    FakeSocket.last().drop(1006);
    await vi.advanceTimersByTimeAsync(1000);
  }
  FakeSocket.last().drop(1006);
  expect(FakeSocket.all.length).toBe(4);
  expect(c.state).toBe("closed");
});

it("answers pings, resolves requests by ack, rejects by error and by timeout", async () => {
  const { c } = client();
  c.connect();
  const ws = FakeSocket.last();
  await up(ws);
  ws.feed({ type: "ping" });
  expect(ws.sent.at(-1)).toEqual({ type: "pong" });
  const ok = c.request("echo", 1);
  const bad = c.request("nope");
  const slow = c.request("slow", null, { timeout: 50 });
  ws.feed({ type: "ack", id: "1", data: "yes" });
  ws.feed({ type: "error", id: "2", data: { code: "unknown_type", message: "no handler" } });
  await expect(ok).resolves.toBe("yes");
  await expect(bad).rejects.toMatchObject({ code: "unknown_type" });
  vi.advanceTimersByTime(60);
  await expect(slow).rejects.toBeInstanceOf(RequestError);
});

it("answers server requests with the handler's result", async () => {
  const { c } = client();
  c.handle("question", (d) => `re: ${d}`).connect();
  const ws = FakeSocket.last();
  await up(ws);
  ws.feed({ type: "question", data: "why", id: 7 });
  await vi.advanceTimersByTimeAsync(0);
  expect(ws.sent.at(-1)).toEqual({ type: "ack", id: 7, data: "re: why" });
});

it("holds sends while disconnected up to outboxSize, then throws; flushes after auth", async () => {
  const { c } = client({ outboxSize: 2 });
  c.connect();
  c.send({ n: 1 });
  c.send({ n: 2 });
  expect(() => c.send({ n: 3 })).toThrow(OutboxFullError);
  await up(FakeSocket.last());
  expect(FakeSocket.last().sent).toEqual([{ type: "auth", token: "t1" }, { n: 1 }, { n: 2 }]);
});

it("resumes a room from a position saved by an earlier client", () => {
  const { c } = client();
  c.subscribe("lobby", {}, { epoch: "E", seq: 41 }).connect();
  expect(FakeSocket.last().url).toBe("ws://h/ws/lobby?since=41&epoch=E");
});

it("backs off when tokens keep expiring at once instead of looping", async () => {
  const { c } = client();
  const delays: number[] = [];
  c.on("disconnected", (e) => delays.push(e.delayMs));
  c.connect();
  for (let i = 0; i < 3; i++) {
    await up(FakeSocket.last());
    FakeSocket.last().drop(1008, "token expired");
    await vi.advanceTimersByTimeAsync(1000);
  }
  expect(delays[0]).toBe(0);
  expect(FakeSocket.all.length).toBe(4);
  expect(delays.slice(1).every((d) => d > 0)).toBe(true);
});

it("falls back to SSE from the room's position after sockets that never opened", async () => {
  const urls: string[] = [];
  class FakeSource {
    onmessage: ((e: { data: string }) => void) | null = null;
    constructor(url: string) { urls.push(url); }
    addEventListener() {}
    close() {}
  }
  const { c } = client({
    sseUrl: (room: string, at?: { seq: number; epoch: string }) => `/events/${room}?since=${at?.seq}&epoch=${at?.epoch}`,
    sseAfter: 2, EventSource: FakeSource as unknown as typeof EventSource,
  });
  c.subscribe("lobby", {}, { epoch: "E", seq: 3 }).connect();
  FakeSocket.last().drop(1006);
  await vi.advanceTimersByTimeAsync(1000);
  FakeSocket.last().drop(1006);
  expect(c.transport).toBe("sse");
  expect(c.state).toBe("connected");
  expect(urls).toEqual(["/events/lobby?since=3&epoch=E"]);
});

it("multiplexed, joins every room after auth from its position, and on subscribe", async () => {
  const { c } = client({ url: "ws://h/ws", multiplex: true });
  const refused: unknown[] = [];
  c.on("refused", (e) => refused.push(e));
  c.subscribe("a", {}, { epoch: "E", seq: 2 }).connect();
  const ws = FakeSocket.last();
  await up(ws);
  expect(ws.sent.slice(1)).toEqual([{ type: "join", data: { room: "a", since: 2, epoch: "E" }, id: "1" }]);
  c.subscribe("b");
  expect(ws.sent.at(-1)).toEqual({ type: "join", data: { room: "b" }, id: "2" });
  ws.feed({ type: "ack", id: "2", data: { room: "b", joined: false, reason: "not allowed" } });
  await vi.advanceTimersByTimeAsync(0);
  expect(refused).toEqual([{ room: "b", reason: "not allowed" }]);
  c.unsubscribe("a");
  expect(ws.sent.at(-1)).toEqual({ type: "leave", data: { room: "a" }, id: "3" });
});
