"""Overflow policies and the bounded outbox that sits behind a pending send.

A connection only queues while a send to its socket is in flight (the peer is
slow, or the transport is applying backpressure). The outbox is bounded by a
message count and optionally by bytes; what happens when it is full is the
manager's :class:`Overflow` policy. There is no unbounded path: a message either
fits, replaces an older one, is dropped and counted, or condemns the connection.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Hashable
from typing import Any

__all__ = ["Outbox", "Overflow", "Pushed"]


class Overflow(enum.Enum):
    """What a connection does when its outbound queue is full.

    Attributes:
        DISCONNECT: close the connection with 1013 (try again later); the peer
            reconnects and resynchronises. The default: nothing is lost silently.
        DROP_OLDEST: discard the oldest queued message to make room.
        DROP_NEWEST: discard the message being sent; the queue is left as it is.
        COALESCE: a message sent with a ``key`` replaces the queued message with
            the same key, in place, whether or not the queue is full (latest value
            wins, as live dashboards want). Unkeyed messages, or a full queue with
            nothing to replace, fall back to dropping the oldest.
    """

    DISCONNECT = "disconnect"
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    COALESCE = "coalesce"


class Pushed(enum.Enum):
    """The outcome of :meth:`Outbox.push`."""

    QUEUED = "queued"
    COALESCED = "coalesced"
    DROPPED_NEWEST = "dropped_newest"
    DROPPED_OLDEST = "dropped_oldest"
    OVERFLOW = "overflow"


class _Entry:
    __slots__ = ("key", "message", "queued_at", "size")

    def __init__(self, message: Any, size: int, key: Hashable | None) -> None:
        self.message = message
        self.size = size
        self.key = key
        self.queued_at = time.perf_counter()


class Outbox:
    """A FIFO of outbound ASGI messages bounded by count and bytes.

    Args:
        max_messages: the most messages held at once (>= 1).
        max_bytes: the most payload bytes held at once, or ``None`` for no byte bound.
        overflow: the policy applied when a push does not fit.

    The deque is created on first use so an idle connection costs no queue.
    """

    __slots__ = ("_items", "_keyed", "dropped", "last_queued_at", "max_bytes", "max_messages",
                 "nbytes", "overflow")  # fmt: skip

    def __init__(self, *, max_messages: int, max_bytes: int | None, overflow: Overflow) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.overflow = overflow
        self.nbytes = 0
        self.dropped = 0  # messages evicted by the last push (DROP_OLDEST / COALESCE)
        self.last_queued_at = 0.0  # perf_counter() when the last popped message was queued
        self._items: deque[_Entry] | None = None
        self._keyed: dict[Hashable, _Entry] | None = None

    def __len__(self) -> int:
        return 0 if self._items is None else len(self._items)

    def push(self, message: Any, size: int, key: Hashable | None = None) -> Pushed:
        """Queue ``message`` of ``size`` bytes, applying the overflow policy.

        Returns:
            What happened. ``OVERFLOW`` means the policy is ``DISCONNECT`` and the
            caller must close the connection; the outbox is left unchanged.
            After ``DROPPED_OLDEST``, :attr:`dropped` says how many were evicted.
        """
        self.dropped = 0
        coalescing = key is not None and self.overflow is Overflow.COALESCE
        if coalescing and self._replace(message, size, key):
            return Pushed.COALESCED
        if self._fits(size):
            self._append(message, size, key)
            return Pushed.QUEUED
        if self.overflow is Overflow.DISCONNECT:
            return Pushed.OVERFLOW
        if self.overflow is Overflow.DROP_NEWEST:
            return Pushed.DROPPED_NEWEST
        return self._evict_for(message, size, key)

    def pop(self) -> Any | None:
        """Remove and return the oldest message, or ``None`` when empty."""
        if not self._items:
            return None
        entry = self._items.popleft()
        self.nbytes -= entry.size
        self.last_queued_at = entry.queued_at
        if entry.key is not None and self._keyed is not None:
            self._keyed.pop(entry.key, None)
        return entry.message

    def clear(self) -> int:
        """Discard everything; return how many messages were discarded."""
        count = len(self)
        self._items = None
        self._keyed = None
        self.nbytes = 0
        return count

    def _fits(self, size: int) -> bool:
        if len(self) >= self.max_messages:
            return False
        return self.max_bytes is None or self.nbytes + size <= self.max_bytes

    def _append(self, message: Any, size: int, key: Hashable | None) -> None:
        if self._items is None:
            self._items = deque()
        entry = _Entry(message, size, key)
        self._items.append(entry)
        self.nbytes += size
        if key is not None and self.overflow is Overflow.COALESCE:
            if self._keyed is None:
                self._keyed = {}
            self._keyed[key] = entry

    def _replace(self, message: Any, size: int, key: Hashable | None) -> bool:
        entry = None if self._keyed is None else self._keyed.get(key)
        if entry is None or (self.max_bytes is not None and size > self.max_bytes):
            return False  # nothing to replace, or the newer value could never fit
        self.nbytes += size - entry.size
        entry.message, entry.size = message, size
        if self.max_bytes is not None:
            self._evict_while_over_bytes(keep=entry)
        return True

    def _evict_for(self, message: Any, size: int, key: Hashable | None) -> Pushed:
        if self.max_bytes is not None and size > self.max_bytes:
            return Pushed.DROPPED_NEWEST  # could never fit, even in an empty queue
        while not self._fits(size):
            self.pop()
            self.dropped += 1
        self._append(message, size, key)
        return Pushed.DROPPED_OLDEST

    def _evict_while_over_bytes(self, keep: _Entry) -> None:
        """Drop the oldest entries other than ``keep`` until the byte bound holds again."""
        limit, items = self.max_bytes, self._items
        if limit is None or items is None:
            return
        for entry in [e for e in items if e is not keep]:
            if self.nbytes <= limit:
                return
            items.remove(entry)
            self.nbytes -= entry.size
            if entry.key is not None and self._keyed is not None:
                self._keyed.pop(entry.key, None)
            self.dropped += 1
