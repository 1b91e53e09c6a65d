/** Reconnect delays: capped exponential backoff with full jitter. */

export interface BackoffOptions {
  /** First delay's upper bound, ms (default 500). */
  baseMs?: number;
  /** Largest delay, ms (default 10 000). */
  capMs?: number;
}

/**
 * The delay before reconnect attempt number `failures` (1 = the first after a failure):
 * uniformly random in [0, min(cap, base * 2^(failures-1))), so that a crowd of clients
 * dropped at once does not come back at once.
 */
export function backoffDelay(failures: number, options: BackoffOptions = {}, random = Math.random): number {
  const base = options.baseMs ?? 500;
  const cap = options.capMs ?? 10_000;
  const exponent = Math.min(Math.max(failures - 1, 0), 30);
  return random() * Math.min(cap, base * 2 ** exponent);
}

/**
 * Counts consecutive failures. A connection that stayed up for `stableMs` after auth_ok
 * resets the count (a server that accepts and drops at once is not retried in a tight loop).
 */
export class FailureCounter {
  failures = 0;
  constructor(readonly stableMs: number) {}

  /** Record a disconnect after `uptimeMs` of authenticated connection; the new count. */
  record(uptimeMs: number): number {
    this.failures = uptimeMs >= this.stableMs ? 1 : this.failures + 1;
    return this.failures;
  }
}
