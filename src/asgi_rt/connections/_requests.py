"""Server-initiated requests that wait for the client's ack, bounded per connection."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ..exceptions import RequestFailed

__all__ = ["PendingRequests"]


class _Waiter:
    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: Any = None


class PendingRequests:
    """Requests of one connection awaiting ``{"type": "ack", "id": ...}``."""

    __slots__ = ("_limit", "_waiting")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._waiting: dict[str, _Waiter] = {}

    def open(self) -> tuple[str, _Waiter]:
        if len(self._waiting) >= self._limit:
            raise RequestFailed(
                f"{self._limit} requests already wait for an ack on this connection"
            )
        request_id = uuid.uuid4().hex[:16]
        waiter = self._waiting[request_id] = _Waiter()
        return request_id, waiter

    def resolve(self, request_id: Any, data: Any) -> bool:
        """Deliver an ack; ``False`` if nothing waits for that id (late or unknown)."""
        waiter = self._waiting.pop(request_id, None) if isinstance(request_id, str) else None
        if waiter is None:
            return False
        waiter.result = data
        waiter.done.set()
        return True

    def forget(self, request_id: str) -> None:
        self._waiting.pop(request_id, None)

    async def call(
        self, send: Callable[[Any], Awaitable[object]], type: str, data: Any, timeout: float
    ) -> Any:
        """Send ``{"type", "data", "id"}`` with ``send`` and return the ack's data.

        Raises:
            RequestFailed: no ack within ``timeout`` seconds, or too many pending.
        """
        request_id, waiter = self.open()
        try:
            await send({"type": type, "data": data, "id": request_id})
            with anyio.move_on_after(timeout):
                await waiter.done.wait()
        finally:
            self.forget(request_id)
        if not waiter.done.is_set():
            raise RequestFailed(f"no ack for {type!r} within {timeout} s")
        return waiter.result
