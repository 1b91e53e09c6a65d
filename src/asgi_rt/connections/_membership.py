"""One connection's place in one room: the last seq it got, and a bounded buffer of live
publications that arrive while its history is being replayed."""

from __future__ import annotations

from typing import Any

__all__ = ["Membership"]

REPLAY_BUFFER = 1024  # live publications held during a replay; beyond: the oldest are dropped


class Membership:
    __slots__ = ("_held", "last_seq")

    def __init__(self, *, replaying: bool) -> None:
        self.last_seq = 0
        self._held: list[tuple[int, Any, int]] | None = [] if replaying else None

    def accepts(self, seq: int, message: Any, size: int) -> bool:
        """A live publication: deliver now (``True``), or hold it while replaying."""
        if self._held is not None:
            if len(self._held) < REPLAY_BUFFER:
                self._held.append((seq, message, size))
            return False
        if seq <= self.last_seq:
            return False  # already delivered by the replay
        self.last_seq = seq
        return True

    def accepts_replayed(self, seq: int) -> bool:
        if seq <= self.last_seq:
            return False
        self.last_seq = seq
        return True

    def end_replay(self) -> list[tuple[Any, int]]:
        """Stop holding; return the held publications not already replayed, in order."""
        held, self._held = self._held or [], None
        out = []
        for seq, message, size in sorted(held, key=lambda item: item[0]):
            if seq > self.last_seq:
                self.last_seq = seq
                out.append((message, size))
        return out
