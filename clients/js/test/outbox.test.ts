import { expect, it } from "vitest";
import { Outbox, OutboxFullError } from "../src/outbox.js";

it("holds up to its size in order, then refuses instead of growing", () => {
  const outbox = new Outbox(2);
  outbox.push("a");
  outbox.push("b");
  expect(() => outbox.push("c")).toThrow(OutboxFullError);
  expect(outbox.drain()).toEqual(["a", "b"]);
  expect(outbox.size).toBe(0);
});

it("refuses a negative size", () => {
  expect(() => new Outbox(-1)).toThrow(RangeError);
});
