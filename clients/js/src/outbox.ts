/** Frames waiting for a connection: bounded; a push beyond the bound throws. */

export class OutboxFullError extends Error {
  constructor(size: number) {
    super(`outbox full: ${size} frames wait for a connection already`);
    this.name = "OutboxFullError";
  }
}

export class Outbox {
  private readonly items: string[] = [];
  constructor(readonly maxSize: number) {
    if (!(maxSize >= 0)) throw new RangeError(`outboxSize must be >= 0, got ${maxSize}`);
  }

  get size(): number {
    return this.items.length;
  }

  /** Queue one encoded frame; throws OutboxFullError when `maxSize` already wait. */
  push(frame: string): void {
    if (this.items.length >= this.maxSize) throw new OutboxFullError(this.items.length);
    this.items.push(frame);
  }

  /** Take every queued frame, oldest first. */
  drain(): string[] {
    return this.items.splice(0, this.items.length);
  }
}
