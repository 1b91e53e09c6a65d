"""One connection's place in one room: the position (epoch, seq) of the last publication
it got, and a bounded buffer of live publications that arrive while its history is being
replayed."""

from __future__ import annotations

from enum import Enum
from typing import Any

__all__ = ["REPLAY_BUFFER", "Membership", "Verdict"]

REPLAY_BUFFER = 1024  # live publications held during a replay; beyond that, replay again


class Verdict(Enum):
    """What to do with a live publication for one member."""

    DELIVER = "deliver"
    SKIP = "skip"  # already delivered, or held until the replay ends
    STALE = "stale"  # another epoch: the member's numbering is gone, it must be told


class Membership:
    __slots__ = ("_held", "_unclean", "epoch", "last_seq")

    def __init__(self, *, replaying: bool) -> None:
        self.last_seq = 0
        self.epoch: str | None = None  # unknown until joined, replayed or first delivered
        self._held: list[tuple[int, str, Any, int]] | None = [] if replaying else None
        self._unclean = False

    def accepts(self, seq: int, epoch: str, message: Any, size: int) -> Verdict:
        """A live publication: deliver it now, skip it (or hold it while replaying), or
        report that the member is in another epoch."""
        if self._held is not None:
            if len(self._held) < REPLAY_BUFFER:
                self._held.append((seq, epoch, message, size))
            else:
                self._unclean = True  # the replay must run again from where it ends
            return Verdict.SKIP
        if epoch != self.epoch:
            if self.epoch is not None:
                return Verdict.STALE
            self.epoch = epoch
        if seq <= self.last_seq:
            return Verdict.SKIP  # already delivered by a replay
        self.last_seq = seq
        return Verdict.DELIVER

    def accepts_replayed(self, seq: int, epoch: str) -> bool:
        if self.epoch is None:
            self.epoch = epoch
        if epoch != self.epoch or seq <= self.last_seq:
            return False
        self.last_seq = seq
        return True

    def restart(self, epoch: str | None, seq: int) -> None:
        """The member was told it continues after ``seq`` of ``epoch`` (``recovery_failed``
        or ``joined``)."""
        self.epoch, self.last_seq = epoch, seq

    def hold(self) -> None:
        """Hold live publications again (a replay is about to run)."""
        self._held, self._unclean = [], False

    def end_replay(self) -> tuple[list[tuple[Any, int]], bool]:
        """Stop holding; return the held publications not already replayed, in order, and
        whether they continue the replay without a gap (``False``: the buffer overflowed
        or the epoch changed meanwhile, so the member must be replayed again)."""
        held, self._held = self._held or [], None
        clean, out = not self._unclean, []
        for seq, epoch, message, size in sorted(held, key=lambda item: item[0]):
            if self.epoch is None:
                self.epoch = epoch
            if epoch != self.epoch:
                clean = False
            elif seq > self.last_seq:
                self.last_seq = seq
                out.append((message, size))
        return out, clean
