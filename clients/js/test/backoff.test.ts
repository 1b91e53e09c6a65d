import { describe, expect, it } from "vitest";
import { backoffDelay, FailureCounter } from "../src/backoff.js";

describe("backoffDelay", () => {
  it("doubles its bound per failure and stops at the cap", () => {
    const top = (n: number) => backoffDelay(n, { baseMs: 100, capMs: 1000 }, () => 0.999999);
    expect([1, 2, 3, 4, 5, 50].map((n) => Math.round(top(n)))).toEqual([100, 200, 400, 800, 1000, 1000]);
  });
  it("is full jitter: anywhere from zero", () => {
    expect(backoffDelay(5, {}, () => 0)).toBe(0);
    expect(backoffDelay(1, {}, () => 0.5)).toBe(250);
  });
});

describe("FailureCounter", () => {
  it("resets only after a connection that stayed up", () => {
    const counter = new FailureCounter(5000);
    expect([0, 4999, 100].map((up) => counter.record(up))).toEqual([1, 2, 3]);
    expect(counter.record(5000)).toBe(1);
  });
});
