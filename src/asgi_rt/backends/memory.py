"""MemoryBackend: the embedded default (one process) and the test double for the contract."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Self

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .base import HistoryGap, Publication, Resync, check_history

__all__ = ["MemoryBackend"]


class _Room:
    """One channel's numbering, history and presence; dropped as a whole when idle."""

    __slots__ = ("epoch", "history", "presence", "seq", "touched")

    def __init__(self, history_size: int, now: float) -> None:
        self.seq = 0
        self.epoch = uuid.uuid4().hex[:12]
        self.history: deque[Publication] = deque(maxlen=history_size or 1)
        self.presence: dict[str, tuple[bytes, float]] = {}
        self.touched = now


class MemoryBackend:
    """Pub/sub inside one process, with a ring buffer of history per channel.

    Memory is bounded: a channel with no subscriber (no local member) and no publication or
    join for ``room_ttl`` seconds is forgotten, and at most ``max_rooms`` channels are
    kept (the least recently used channel without a subscriber goes first). A forgotten
    channel starts again under a new epoch, so a client resuming into it is told
    ``recovery_failed`` rather than resumed into a different numbering.

    Args:
        history_size: publications kept per channel for resume (0: none).
        buffer: publications the listener may lag behind before ``publish`` waits.
        room_ttl: seconds an idle channel without subscribers keeps its state.
        max_rooms: channels kept at most.
        idempotency_ttl: seconds a publish's ``idempotency_key`` is remembered.
        max_idempotency_keys: keys remembered at most (the oldest are forgotten first).
        clock: seconds, monotonic (for tests that move time).
    """

    def __init__(
        self, *, history_size: int = 1000, buffer: int = 10_000, room_ttl: float = 3600.0,
        max_rooms: int = 100_000, idempotency_ttl: float = 300.0,
        max_idempotency_keys: int = 100_000, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        if history_size < 0:
            raise ValueError(f"history_size must be >= 0, got {history_size}")
        if buffer < 1:
            raise ValueError(f"buffer must be >= 1, got {buffer}")
        if room_ttl <= 0 or idempotency_ttl <= 0:
            raise ValueError(f"room_ttl and idempotency_ttl must be > 0, got {room_ttl}, "
                             f"{idempotency_ttl}")  # fmt: skip
        if max_rooms < 1 or max_idempotency_keys < 1:
            raise ValueError("max_rooms and max_idempotency_keys must be >= 1")
        self.history_size = history_size
        self.room_ttl = room_ttl
        self.max_rooms = max_rooms
        self.idempotency_ttl = idempotency_ttl
        self.max_idempotency_keys = max_idempotency_keys
        self._clock = clock
        self._buffer = buffer
        self._subscribed: set[str] = set()
        self._rooms: OrderedDict[str, _Room] = OrderedDict()  # least recently used first
        self._keys: OrderedDict[tuple[str, str], tuple[Publication, float]] = OrderedDict()
        self._send: MemoryObjectSendStream[Publication] | None = None
        self._receive: MemoryObjectReceiveStream[Publication] | None = None

    @property
    def rooms_held(self) -> int:
        """Channels whose state (numbering, history, presence) is kept right now."""
        return len(self._rooms)

    async def __aenter__(self) -> Self:
        self._send, self._receive = anyio.create_memory_object_stream[Publication](self._buffer)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        if self._send is not None:
            self._send.close()
        if self._receive is not None:
            self._receive.close()

    async def publish(
        self, channel: str, data: bytes, *, idempotency_key: str | None = None
    ) -> Publication:
        now = self._clock()
        if idempotency_key is not None and (prior := self._recall(channel, idempotency_key, now)):
            return prior
        room = self._room(channel, now)
        room.seq += 1
        publication = Publication(channel, room.seq, room.epoch, data)
        if self.history_size:
            room.history.append(publication)
        if idempotency_key is not None:
            self._remember(channel, idempotency_key, publication, now)
        if channel in self._subscribed and self._send is not None:
            await self._send.send(publication)
        return publication

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)
        if (room := self._rooms.get(channel)) is not None:
            room.touched = self._clock()  # idle from now on: its ttl starts here

    def publications(self) -> AsyncIterator[Publication | Resync]:
        if self._receive is None:
            raise RuntimeError("MemoryBackend is not started: use it as 'async with'")
        return self._receive

    async def position(self, channel: str) -> tuple[int, str | None]:
        room = self._room(channel, self._clock())
        return room.seq, room.epoch

    async def history(
        self, channel: str, since: int, epoch: str | None = None
    ) -> list[Publication]:
        room = self._rooms.get(channel)
        if room is None:
            if epoch is not None or since > 0:
                reason = "epoch changed" if epoch else "unknown position"
                raise HistoryGap(f"room {channel!r} keeps no history (forgotten or new)",
                                 reason=reason)  # fmt: skip
            return []
        kept = [p for p in room.history if p.seq > since] if self.history_size else []
        return check_history(channel, since, epoch, room.seq, room.epoch, kept)

    async def presence_add(self, channel: str, member: str, info: bytes, ttl: float) -> None:
        now = self._clock()
        self._room(channel, now).presence[member] = (info, now + ttl)

    async def presence_remove(self, channel: str, member: str) -> None:
        room = self._rooms.get(channel)
        if room is not None:
            room.presence.pop(member, None)

    async def presence(self, channel: str) -> dict[str, bytes]:
        room = self._rooms.get(channel)
        if room is None:
            return {}
        now = self._clock()
        members = room.presence
        for member in [m for m, (_, expires) in members.items() if expires <= now]:
            del members[member]
        return {member: info for member, (info, _) in members.items()}

    def _room(self, channel: str, now: float) -> _Room:
        """The channel's state, made if needed and marked as just used; forgets idle ones."""
        room = self._rooms.get(channel)
        if room is None:
            room = self._rooms[channel] = _Room(self.history_size, now)
            self._forget_idle(now)
        else:
            room.touched = now
            self._rooms.move_to_end(channel)
        return room

    def _forget_idle(self, now: float) -> None:
        """Drop idle channels without subscribers, and the least recently used beyond
        ``max_rooms`` (a subscribed one only when every kept channel is subscribed)."""
        rooms = self._rooms
        for _ in range(len(rooms)):  # each channel is looked at once at most
            channel, room = next(iter(rooms.items()))
            over = len(rooms) > self.max_rooms
            if channel in self._subscribed and not (over and len(self._subscribed) >= len(rooms)):
                rooms.move_to_end(channel)  # in use: not a candidate
            elif over or now - room.touched > self.room_ttl:
                del rooms[channel]
            else:
                break

    def _recall(self, channel: str, key: str, now: float) -> Publication | None:
        keys = self._keys
        while keys:
            oldest = next(iter(keys.values()))
            if oldest[1] > now and len(keys) <= self.max_idempotency_keys:
                break
            keys.popitem(last=False)
        remembered = keys.get((channel, key))
        return None if remembered is None else remembered[0]

    def _remember(self, channel: str, key: str, publication: Publication, now: float) -> None:
        self._keys[(channel, key)] = (publication, now + self.idempotency_ttl)
