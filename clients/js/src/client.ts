/** RtClient: one WebSocket to an asgi_rt server that authenticates, reconnects and resumes. */
import { backoffDelay, FailureCounter } from "./backoff.js";
import { Outbox } from "./outbox.js";
import type { Ack, Envelope, ErrorData, Joined, RecoveryFailed, RoomFrame, RoomReply, RoomRequest } from "./protocol.js";
import { type Discontinuity, parseEventId, type Position, RoomStream } from "./rooms.js";

export type State = "idle" | "connecting" | "connected" | "disconnected" | "closed";
export type Transport = "websocket" | "sse";
export type Positions = ReadonlyMap<string, Position | undefined>;

export interface RoomHandlers {
  /** A publication's data, once and in order. */
  message?: (data: unknown, meta: { room: string; seq: number; epoch: string }) => void;
  /** Publications may have been missed: re-sync from your source of truth. */
  discontinuity?: (info: Discontinuity) => void;
  /** A member joined or left (rooms with presence). */
  presence?: (event: { event: "join" | "leave"; member: { id: string; user?: unknown } }) => void;
}

export interface ClientOptions {
  /** The socket URL for the rooms' positions (see `roomUrl`), or a fixed URL. */
  url: string | ((positions: Positions) => string);
  /** Many rooms over one socket: join each with a `join` request after auth (the server
   * registers `asgi_rt.rooms_protocol.room_handlers`) instead of by URL. */
  multiplex?: boolean;
  /** Called on every connect; its token is the first frame. Omit for no auth. */
  getToken?: () => string | Promise<string>;
  /** SSE fallback: the event-stream URL of a room; receive-only rooms use it when
   * WebSockets cannot connect (`sseAfter` attempts in a row never opened). */
  sseUrl?: (room: string, position: Position | undefined) => string;
  sseAfter?: number;
  baseMs?: number;
  capMs?: number;
  /** A connection up this long after auth_ok resets the backoff (default 5 000 ms). */
  stableMs?: number;
  /** Give up after this many failures in a row (default Infinity). */
  maxFailures?: number;
  /** Frames `send`/`request` may hold while disconnected (default 100). */
  outboxSize?: number;
  /** ms to wait for auth_ok (default 10 000). */
  authTimeoutMs?: number;
  /** Test seam: the WebSocket and EventSource constructors. */
  WebSocket?: typeof WebSocket;
  EventSource?: typeof EventSource;
}

export interface ClientEvents {
  state: { state: State; transport: Transport };
  connecting: { attempt: number };
  connected: { transport: Transport };
  disconnected: { code: number; reason: string; delayMs: number };
  closed: { code: number; reason: string };
  message: Envelope;
  discontinuity: Discontinuity;
  /** A multiplexed join the server refused (the room stays subscribed; retried on reconnect). */
  refused: { room: string; reason: string };
}

export class RequestError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = "RequestError";
  }
}

type Listener<T> = (event: T) => void;
interface Pending { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: ReturnType<typeof setTimeout> }

/** The default URL hook: `${base}/${room}`, plus `?since=&epoch=` once a position is known. */
export function roomUrl(base: string): (positions: Positions) => string {
  return (positions) => {
    const [room, position] = [...positions][0] ?? ["", undefined];
    const url = `${base}/${encodeURIComponent(room)}`;
    return position ? `${url}?since=${position.seq}&epoch=${encodeURIComponent(position.epoch)}` : url;
  };
}

export class RtClient {
  state: State = "idle";
  transport: Transport = "websocket";
  private readonly o: ClientOptions;
  private ws: WebSocket | undefined;
  private readonly rooms = new Map<string, { stream: RoomStream; handlers: RoomHandlers }>();
  private readonly listeners = new Map<string, Set<Listener<never>>>();
  private readonly handlers = new Map<string, (data: unknown) => unknown>();
  private readonly pending = new Map<string, Pending>();
  private readonly outbox: Outbox;
  private readonly counter: FailureCounter;
  private readonly sources: EventSource[] = [];
  private upSince = 0;
  private neverOpened = 0;
  private attempt = 0;
  private nextId = 1;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: ClientOptions) {
    this.o = options;
    this.outbox = new Outbox(options.outboxSize ?? 100);
    this.counter = new FailureCounter(options.stableMs ?? 5_000);
  }

  on<K extends keyof ClientEvents>(name: K, listener: Listener<ClientEvents[K]>): () => void {
    const set = this.listeners.get(name) ?? new Set();
    this.listeners.set(name, set);
    set.add(listener as Listener<never>);
    return () => set.delete(listener as Listener<never>);
  }

  /** Receive a room's publications (join it on every connect, resuming where it was;
   * `from`: a position saved earlier, e.g. from an earlier client's `positions()`). */
  subscribe(room: string, handlers: RoomHandlers = {}, from?: Position): this {
    const stream = new RoomStream(room);
    stream.position = from;
    this.rooms.set(room, { stream, handlers });
    if (this.o.multiplex && this.state === "connected") this.join(room);
    return this;
  }

  /** Stop receiving a room (multiplexed: leave it on the server too). */
  unsubscribe(room: string): this {
    if (this.rooms.delete(room) && this.o.multiplex && this.state === "connected") {
      this.request("leave", { room }).catch(() => undefined);
    }
    return this;
  }

  private join(room: string): void {
    const at = this.rooms.get(room)?.stream.position;
    const data: RoomRequest = at ? { room, since: at.seq, epoch: at.epoch } : { room };
    this.request("join", data).then(
      (ack) => {
        const answer = ack as RoomReply | null;
        if (answer && answer.joined === false) this.emit("refused", { room, reason: answer.reason ?? "refused" });
      },
      (error: Error) => this.state === "connected" && this.emit("refused", { room, reason: error.message }),
    );
  }

  /** Answer server requests of `type` (the result is sent back as the ack's data). */
  handle(type: string, handler: (data: unknown) => unknown): this {
    this.handlers.set(type, handler);
    return this;
  }

  /** Where each subscribed room's stream stands. */
  positions(): Positions {
    return new Map([...this.rooms].map(([room, r]) => [room, r.stream.position]));
  }

  connect(): this {
    if (this.state === "idle" || this.state === "closed") this.open();
    return this;
  }

  /** Close for good (code 1000); pending requests are rejected. */
  close(): void {
    this.finish(1000, "closed by the client");
  }

  /** Send a JSON frame now, or hold it while disconnected. Throws OutboxFullError when full. */
  send(data: unknown): void {
    this.write(JSON.stringify(data));
  }

  /** Send `{type, data, id}`; resolves with the ack's data, rejects on error frame or timeout. */
  request(type: string, data?: unknown, options: { timeout?: number } = {}): Promise<unknown> {
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      const ms = options.timeout ?? 10_000;
      const timer = setTimeout(() => this.settle(id, new RequestError("timeout", `no answer to ${type} within ${ms} ms`)), ms);
      this.pending.set(id, { resolve, reject, timer });
      try {
        this.write(JSON.stringify({ type, data, id }));
      } catch (error) {
        this.settle(id, error as Error);
      }
    });
  }

  /** Send a fresh token on the open connection (a refresh before the old one expires). */
  async refreshToken(): Promise<void> {
    if (this.o.getToken && this.ws && this.state === "connected") {
      this.ws.send(JSON.stringify({ type: "auth", token: await this.o.getToken() }));
    }
  }

  private emit<K extends keyof ClientEvents>(name: K, event: ClientEvents[K]): void {
    for (const listener of this.listeners.get(name) ?? []) (listener as Listener<ClientEvents[K]>)(event);
  }

  private setState(state: State): void {
    this.state = state;
    this.emit("state", { state, transport: this.transport });
  }

  private write(frame: string): void {
    if (this.state === "closed") throw new Error("the client is closed");
    if (this.ws && this.state === "connected" && this.transport === "websocket") this.ws.send(frame);
    else this.outbox.push(frame);
  }

  private settle(id: string, error: Error | undefined, value?: unknown): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (error) p.reject(error);
    else p.resolve(value);
  }

  private open(): void {
    const url = typeof this.o.url === "string" ? this.o.url : this.o.url(this.positions());
    const Ws = this.o.WebSocket ?? WebSocket;
    const ws = (this.ws = new Ws(url));
    let opened = false;
    let authTimer: ReturnType<typeof setTimeout> | undefined;
    this.attempt += 1;
    this.setState("connecting");
    this.emit("connecting", { attempt: this.attempt });
    ws.onopen = async () => {
      opened = true;
      authTimer = setTimeout(() => ws.close(4000, "auth timeout"), this.o.authTimeoutMs ?? 10_000);
      if (!this.o.getToken) return this.ready(ws, authTimer);
      try {
        const token = await this.o.getToken();
        if (this.ws === ws) ws.send(JSON.stringify({ type: "auth", token }));
      } catch {
        ws.close(4000, "getToken failed");
      }
    };
    ws.onmessage = (e) => this.ws === ws && this.receive(ws, String(e.data), authTimer);
    ws.onclose = (e) => {
      clearTimeout(authTimer);
      if (this.ws === ws) this.closed(e.code, e.reason, opened);
    };
  }

  private ready(ws: WebSocket, authTimer: ReturnType<typeof setTimeout> | undefined): void {
    clearTimeout(authTimer);
    this.upSince = Date.now();
    this.neverOpened = 0;
    this.setState("connected");
    if (this.o.multiplex) for (const room of this.rooms.keys()) this.join(room);
    for (const frame of this.outbox.drain()) ws.send(frame);
    this.emit("connected", { transport: "websocket" });
  }

  private closed(code: number, reason: string, opened: boolean): void {
    this.ws = undefined;
    const uptime = this.upSince ? Date.now() - this.upSince : 0;
    this.upSince = 0;
    for (const id of [...this.pending.keys()]) this.settle(id, new RequestError("disconnected", `connection closed (${code})`));
    const expired = code === 1008 && reason === "token expired";
    const failures = this.counter.record(uptime);
    this.neverOpened = opened ? 0 : this.neverOpened + 1;
    if ((code === 1008 && !expired) || failures > (this.o.maxFailures ?? Infinity)) {
      return this.finish(code, reason || (code === 1008 ? "refused by the server" : "too many failures"));
    }
    if (this.o.sseUrl && this.neverOpened >= (this.o.sseAfter ?? 3)) return this.fallBack();
    // an expired token is replaced at once, but only the first time in a row: a token
    // that is expired when issued must not make a tight loop
    const delayMs = expired && failures === 1 ? 0 : backoffDelay(failures, { baseMs: this.o.baseMs, capMs: this.o.capMs });
    this.setState("disconnected");
    this.emit("disconnected", { code, reason, delayMs });
    this.timer = setTimeout(() => this.open(), delayMs);
  }

  private finish(code: number, reason: string): void {
    clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = undefined;
    ws?.close(1000);
    for (const source of this.sources.splice(0)) source.close();
    for (const id of [...this.pending.keys()]) this.settle(id, new RequestError("closed", reason));
    this.outbox.drain();
    this.setState("closed");
    this.emit("closed", { code, reason });
  }

  private receive(ws: WebSocket, text: string, authTimer: ReturnType<typeof setTimeout> | undefined): void {
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(text);
    } catch {
      return;
    }
    if (m === null || typeof m !== "object") return;
    if (m.type === "auth_ok") {
      if (this.state !== "connected") this.ready(ws, authTimer);
    } else if (m.type === "ping") ws.send('{"type":"pong"}');
    else this.dispatch(m, (frame) => ws.send(frame));
  }

  /** Everything but auth and ping, from either transport. */
  private dispatch(m: Record<string, unknown>, reply: (frame: string) => void): void {
    const room = typeof m.room === "string" ? this.rooms.get(m.room) : undefined;
    if (m.type === "joined" && room) return this.tell(room.handlers, room.stream.joined(m as unknown as Joined));
    if (m.type === "recovery_failed" && room) return this.tell(room.handlers, room.stream.recoveryFailed(m as unknown as RecoveryFailed));
    if (m.type === undefined && room && typeof m.seq === "number") return this.publication(room, m as unknown as RoomFrame);
    if ((m.type === "ack" || m.type === "error") && typeof m.id === "string" && this.pending.has(m.id)) {
      const error = m.type === "error" ? (m.data as ErrorData) : undefined;
      return this.settle(m.id, error && new RequestError(error.code, error.message), (m as unknown as Ack).data);
    }
    const handler = typeof m.type === "string" ? this.handlers.get(m.type) : undefined;
    if (handler) return void this.serve(handler, m as unknown as Envelope, reply);
    this.emit("message", m as unknown as Envelope);
  }

  private async serve(handler: (data: unknown) => unknown, m: Envelope, reply: (frame: string) => void): Promise<void> {
    try {
      const data = await handler(m.data);
      if (m.id !== undefined) reply(JSON.stringify({ type: "ack", id: m.id, data: data ?? null }));
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      if (m.id !== undefined) reply(JSON.stringify({ type: "error", id: m.id, data: { code: "handler_error", message } }));
    }
  }

  private publication(room: { stream: RoomStream; handlers: RoomHandlers }, frame: RoomFrame): void {
    if (room.stream.accept(frame, (gap) => this.tell(room.handlers, gap)) === "duplicate") return;
    const data = frame.data as { type?: unknown; event?: unknown } | null;
    if (room.handlers.presence && data && data.type === "presence" && (data.event === "join" || data.event === "leave")) {
      room.handlers.presence(data as Parameters<NonNullable<RoomHandlers["presence"]>>[0]);
    } else room.handlers.message?.(frame.data, { room: frame.room, seq: frame.seq, epoch: frame.epoch });
  }

  private tell(handlers: RoomHandlers, info: Discontinuity | undefined): void {
    if (!info) return;
    handlers.discontinuity?.(info);
    this.emit("discontinuity", info);
  }

  /** WebSockets never open: receive the rooms over SSE (EventSource resumes by Last-Event-ID). */
  private fallBack(): void {
    const Es = this.o.EventSource ?? EventSource;
    this.transport = "sse";
    for (const [room, { stream }] of this.rooms) {
      const source = new Es(this.o.sseUrl!(room, stream.position));
      source.onmessage = (e) => {
        let m: Record<string, unknown>;
        try {
          m = JSON.parse(e.data);
        } catch {
          return;
        }
        if (m && typeof m === "object" && m.type !== "ping") this.dispatch(m, () => undefined);
      };
      source.addEventListener("close", () => source.close());
      this.sources.push(source);
    }
    this.setState("connected");
    this.emit("connected", { transport: "sse" });
  }
}

export { parseEventId };
