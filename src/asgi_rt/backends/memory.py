"""MemoryBackend: the embedded default (one process) and the test double for the contract."""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .base import HistoryGap, Publication

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Pub/sub inside one process, with a ring buffer of history per channel.

    Args:
        history_size: publications kept per channel for resume (0: none).
        buffer: publications the listener may lag behind before ``publish`` waits.
    """

    def __init__(self, *, history_size: int = 1000, buffer: int = 10_000) -> None:
        if history_size < 0:
            raise ValueError(f"history_size must be >= 0, got {history_size}")
        if buffer < 1:
            raise ValueError(f"buffer must be >= 1, got {buffer}")
        self.history_size = history_size
        self._buffer = buffer
        self._subscribed: set[str] = set()
        self._seq: dict[str, int] = {}
        self._epoch: dict[str, str] = {}
        self._history: dict[str, deque[Publication]] = {}
        self._presence: dict[str, dict[str, tuple[bytes, float]]] = {}
        self._send: MemoryObjectSendStream[Publication] | None = None
        self._receive: MemoryObjectReceiveStream[Publication] | None = None

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

    async def publish(self, channel: str, data: bytes) -> Publication:
        seq = self._seq.get(channel, 0) + 1
        self._seq[channel] = seq
        publication = Publication(channel, seq, self._epoch_of(channel), data)
        if self.history_size:
            self._history.setdefault(channel, deque(maxlen=self.history_size)).append(publication)
        if channel in self._subscribed and self._send is not None:
            await self._send.send(publication)
        return publication

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    def publications(self) -> AsyncIterator[Publication]:
        if self._receive is None:
            raise RuntimeError("MemoryBackend is not started: use it as 'async with'")
        return self._receive

    async def position(self, channel: str) -> tuple[int, str | None]:
        return self._seq.get(channel, 0), self._epoch.get(channel)

    async def history(
        self, channel: str, since: int, epoch: str | None = None
    ) -> list[Publication]:
        current = self._seq.get(channel, 0)
        if epoch is not None and epoch != self._epoch_of(channel):
            raise HistoryGap(f"room {channel!r} history epoch changed", reason="epoch changed")
        if since >= current:
            if since > current:
                raise HistoryGap(f"seq {since} is ahead of room {channel!r} ({current})",
                                 reason="unknown position")  # fmt: skip
            return []
        kept = self._history.get(channel, ())
        if not kept or kept[0].seq > since + 1:
            raise HistoryGap(f"room {channel!r} no longer keeps seq {since + 1}", reason="trimmed")
        return [p for p in kept if p.seq > since]

    async def presence_add(self, channel: str, member: str, info: bytes, ttl: float) -> None:
        self._presence.setdefault(channel, {})[member] = (info, time.monotonic() + ttl)

    async def presence_remove(self, channel: str, member: str) -> None:
        members = self._presence.get(channel, {})
        members.pop(member, None)
        if not members:
            self._presence.pop(channel, None)

    async def presence(self, channel: str) -> dict[str, bytes]:
        now = time.monotonic()
        members = self._presence.get(channel, {})
        for member in [m for m, (_, expires) in members.items() if expires <= now]:
            del members[member]
        return {member: info for member, (info, _) in members.items()}

    def _epoch_of(self, channel: str) -> str:
        epoch = self._epoch.get(channel)
        if epoch is None:
            epoch = self._epoch[channel] = uuid.uuid4().hex[:12]
        return epoch
