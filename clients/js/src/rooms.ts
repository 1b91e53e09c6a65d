/** One room's position: de-duplication by (epoch, seq), order, and discontinuities. */
import type { Joined, RecoveryFailed, RoomFrame } from "./protocol.js";

export interface Position {
  epoch: string;
  seq: number;
}

/** What the app is told when it may have missed publications. */
export interface Discontinuity {
  room: string;
  /** The server's reason ("trimmed", "epoch changed", ...) or "gap" (a seq skipped). */
  reason: string;
  /** Where the stream now continues after (undefined: from whatever comes next). */
  position: Position | undefined;
}

export type Verdict = "deliver" | "duplicate";

export class RoomStream {
  /** The last publication delivered (or announced by joined / recovery_failed). */
  position: Position | undefined;
  constructor(readonly room: string) {}

  /** Server said where our stream starts; a jump forward within an epoch is a gap. */
  joined(frame: Joined): Discontinuity | undefined {
    const next = frame.epoch == null ? undefined : { epoch: frame.epoch, seq: frame.seq };
    const previous = this.position;
    this.position = next ?? previous;
    if (previous && next && (previous.epoch !== next.epoch || next.seq > previous.seq)) {
      return { room: this.room, reason: previous.epoch !== next.epoch ? "epoch changed" : "gap", position: next };
    }
    return undefined;
  }

  recoveryFailed(frame: RecoveryFailed): Discontinuity {
    const epoch = frame.epoch;
    this.position = epoch == null || frame.seq == null ? undefined : { epoch, seq: frame.seq };
    return { room: this.room, reason: frame.reason, position: this.position };
  }

  /** Decide on a publication; a discontinuity is reported through `gap` before delivery. */
  accept(frame: RoomFrame, gap: (d: Discontinuity) => void): Verdict {
    const p = this.position;
    if (p && p.epoch === frame.epoch && frame.seq <= p.seq) return "duplicate";
    this.position = { epoch: frame.epoch, seq: frame.seq };
    if (p && p.epoch !== frame.epoch) gap({ room: this.room, reason: "epoch changed", position: { epoch: frame.epoch, seq: frame.seq - 1 } });
    else if (p && frame.seq > p.seq + 1) gap({ room: this.room, reason: "gap", position: { epoch: p.epoch, seq: frame.seq - 1 } });
    return "deliver";
  }
}

/** `<epoch>:<seq>` (an SSE event id) as a position; undefined for anything else. */
export function parseEventId(id: string): Position | undefined {
  const match = /^([A-Za-z0-9_-]*):([0-9]{1,18})$/.exec(id);
  return match && match[1] ? { epoch: match[1], seq: Number(match[2]) } : undefined;
}
