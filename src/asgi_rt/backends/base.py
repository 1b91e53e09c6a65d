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
    "ListenerHealth",
    "PositionStore",
    "PresenceStore",
    "Publication",
    "PublishNotApplied",
    "PublishOutcomeUnknown",
    "Resync",
    "check_history",
    "check_options",
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


@dataclass(frozen=True, slots=True)
class Resync:
    """Delivery of ``channels`` was interrupted (the backend lost and regained its
    subscription): publications may have been missed, or the channels' numbering may have
    restarted. A consumer that tracks positions asks for them again (``position``,
    ``history``) instead of waiting for the next publication to show the gap."""

    channels: tuple[str, ...]


@runtime_checkable
class Backend(Protocol):
    """Pub/sub with per-channel sequence numbers and bounded history.

    Used as an async context manager (connect on enter, release everything on exit).
    ``publications()`` is the one stream a RoomManager's listener reads; it is bounded,
    and every publication to a subscribed channel appears in it at most once, in order
    per channel; when the backend cannot guarantee that it missed none (it lost its
    subscription and regained it), it says so with a :class:`Resync` item.
    """

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...  # fmt: skip

    async def publish(
        self, channel: str, data: bytes, *, idempotency_key: str | None = None
    ) -> Publication:
        """Number ``data`` in ``channel``, keep it in the history and deliver it.

        With ``idempotency_key``, a publish that repeats a key the backend still remembers
        for the channel applies nothing and returns the first publish's ``Publication``.

        Raises:
            PublishNotApplied: it certainly did not happen (safe to retry).
            PublishOutcomeUnknown: it may have happened (retry with the same key).
        """
        ...

    async def subscribe(self, channel: str) -> None: ...

    async def unsubscribe(self, channel: str) -> None: ...

    def publications(self) -> AsyncIterator[Publication | Resync]: ...

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
        """``(last seq, epoch)``. A channel gets its epoch here if it has none yet (its
        first join), so that a client always has an epoch to resume with."""
        ...


@runtime_checkable
class ListenerHealth(Protocol):
    """A backend whose listener can be down (a network backplane): what the metrics read.

    Attributes:
        listener_up: whether the backend is subscribed and delivering right now.
        reconnects: how many times the listener had to reconnect.
    """

    listener_up: bool
    reconnects: int


def check_history(
    channel: str, since: int, epoch: str | None, current: int, room_epoch: str | None,
    kept: list[Publication],
) -> list[Publication]:  # fmt: skip
    """What a backend's ``history`` returns, given the channel's position and the kept
    publications after ``since`` (oldest first): every backend applies the same rules.

    Raises:
        HistoryGap: ``epoch`` is not the channel's, ``since`` is ahead of it, or the kept
            publications do not start right after ``since``.
    """
    if epoch is not None and epoch != room_epoch:
        raise HistoryGap(f"room {channel!r} history epoch changed", reason="epoch changed")
    if since > current:
        raise HistoryGap(f"seq {since} is ahead of room {channel!r} ({current})",
                         reason="unknown position")  # fmt: skip
    if since < current and (not kept or kept[0].seq != since + 1):
        raise HistoryGap(f"room {channel!r} no longer keeps seq {since + 1}", reason="trimmed")
    return kept


def check_options(
    *, history_size: int, buffer: int, room_ttl: float, idempotency_ttl: float,
    **positive: float,
) -> None:  # fmt: skip
    """The options every backplane shares, validated once: each message names the option
    and the value it got (``positive`` are further seconds that must be > 0).

    Raises:
        ValueError: a bound out of range.
    """
    if history_size < 0:
        raise ValueError(f"history_size must be >= 0, got {history_size}")
    if buffer < 1:
        raise ValueError(f"buffer must be >= 1, got {buffer}")
    for name, value in {"room_ttl": room_ttl, "idempotency_ttl": idempotency_ttl,
                        **positive}.items():  # fmt: skip
        if value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")
