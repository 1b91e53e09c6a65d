import { expect, it } from "vitest";
import { type Discontinuity, parseEventId, RoomStream } from "../src/rooms.js";

const frame = (seq: number, epoch = "e1") => ({ room: "r", seq, epoch, data: seq });

function run(stream: RoomStream, seqs: Array<[number, string?]>) {
  const gaps: Discontinuity[] = [];
  const delivered = seqs.filter(([s, e]) => stream.accept(frame(s, e), (g) => gaps.push(g)) === "deliver").map(([s]) => s);
  return { delivered, gaps };
}

it("drops what it delivered already (a replay after reconnect)", () => {
  const stream = new RoomStream("r");
  stream.joined({ type: "joined", room: "r", seq: 2, epoch: "e1" });
  expect(run(stream, [[3], [4], [3], [4], [5]])).toEqual({ delivered: [3, 4, 5], gaps: [] });
  expect(stream.position).toEqual({ epoch: "e1", seq: 5 });
});

it("tells a skipped seq and a silent epoch change as discontinuities", () => {
  const stream = new RoomStream("r");
  stream.joined({ type: "joined", room: "r", seq: 0, epoch: "e1" });
  const { delivered, gaps } = run(stream, [[1], [3], [1, "e2"]]);
  expect(delivered).toEqual([1, 3, 1]);
  expect(gaps.map((g) => [g.reason, g.position])).toEqual([
    ["gap", { epoch: "e1", seq: 2 }],
    ["epoch changed", { epoch: "e2", seq: 0 }],
  ]);
});

it("recovery_failed moves the position where the server says, so the new epoch's frames come", () => {
  const stream = new RoomStream("r");
  stream.joined({ type: "joined", room: "r", seq: 9, epoch: "old" });
  const told = stream.recoveryFailed({ type: "recovery_failed", room: "r", reason: "epoch changed", seq: 0, epoch: "new" });
  expect(told).toEqual({ room: "r", reason: "epoch changed", position: { epoch: "new", seq: 0 } });
  expect(run(stream, [[1, "new"], [2, "new"]])).toEqual({ delivered: [1, 2], gaps: [] });
});

it("parses SSE ids <epoch>:<seq> and nothing else", () => {
  expect(parseEventId("abc:12")).toEqual({ epoch: "abc", seq: 12 });
  expect(parseEventId(":3")).toBeUndefined();
  expect(parseEventId("12")).toBeUndefined();
});
