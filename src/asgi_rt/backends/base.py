"""The backplane contract: what a RoomManager needs from a pub/sub with history.

A backend carries a room's publications to every process that has a member in it,
numbers them per room (``seq``, monotonically increasing from 1), and keeps a bounded
history so that a client that reconnects can be given what it missed, or be told that
it cannot (the history was trimmed, or lost: then the room's ``epoch`` changes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from ..exceptions import (
    BackendUnavailable,
    HistoryGap,
    PublishNotApplied,
    PublishOutcomeUnknown,
)

__all__ = [
    "Backend",
    "BackendUnavailable",
    "HistoryGap",
    "PositionStore",
    "PresenceStore",
    "Publication",
    "PublishNotApplied",
    "PublishOutcomeUnknown",
]


@dataclass(frozen=True, slots=True)
class Publication:
    """One message published to a channel, as every subscriber receives it.

    Attributes:
        channel: the room.
        seq: its number in the room (1, 2, ...), the same on every worker.
        epoch: the room's history generation; changes when history is lost.
        data: the payload, opaque bytes to the backend.
    """

    channel: str
    seq: int
    epoch: str
    data: bytes


@runtime_checkable
class Backend(Protocol):
    """Pub/sub with per-channel sequence numbers and bounded history.

    Used as an async context manager (connect on enter, release everything on exit).
    ``publications()`` is the one stream a RoomManager's listener reads; it is bounded,
    and every publication to a subscribed channel appears in it exactly once, in order
    per channel.
    """

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...  # fmt: skip

    async def publish(self, channel: str, data: bytes) -> Publication: ...

    async def subscribe(self, channel: str) -> None: ...

    async def unsubscribe(self, channel: str) -> None: ...

    def publications(self) -> AsyncIterator[Publication]: ...

    async def history(
        self, channel: str, since: int, epoch: str | None = None
    ) -> list[Publication]:
        """Publications with ``seq > since``, oldest first.

        Raises:
            HistoryGap: some of them are no longer kept, or ``epoch`` is not current.
        """
        ...


@runtime_checkable
class PresenceStore(Protocol):
    """Who is in a channel across processes; entries expire unless refreshed."""

    async def presence_add(self, channel: str, member: str, info: bytes, ttl: float) -> None:
        """Add or refresh ``member`` (``info`` is opaque) for ``ttl`` seconds."""
        ...

    async def presence_remove(self, channel: str, member: str) -> None: ...

    async def presence(self, channel: str) -> dict[str, bytes]:
        """Every unexpired member of ``channel`` and its info."""
        ...


@runtime_checkable
class PositionStore(Protocol):
    """Where a channel's numbering stands (for telling a joining client what to resume from)."""

    async def position(self, channel: str) -> tuple[int, str | None]:
        """``(last seq, epoch)``; ``(0, None)`` for a channel nothing was published to."""
        ...
