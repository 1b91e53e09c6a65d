"""Letting another task end a pending receive, cheaply.

When the manager closes a connection (a slow consumer, a send timeout), the handler is
usually waiting in ``receive`` for a peer that will never send again; that wait must
end so the handler can finish. An anyio ``CancelScope`` around every receive does it,
but costs ~4.5 µs per frame on asyncio. Under asyncio this instead remembers the waiting
task and, only when asked, cancels it and takes the cancellation back (``uncancel``), as
``asyncio.timeout`` does; a cancellation anyone else requested still propagates. Under
trio a cancel scope is used (trio's are cheap).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

__all__ = ["INTERRUPTED", "Interruptible"]

INTERRUPTED: Any = object()


class Interruptible:
    __slots__ = ("_asyncio", "_interrupted", "_scope", "_task")

    def __init__(self, *, on_asyncio: bool) -> None:
        self._asyncio = on_asyncio
        self._task: asyncio.Task[Any] | None = None
        self._scope: anyio.CancelScope | None = None
        self._interrupted = False

    async def wait(self, receive: Callable[[], Awaitable[Any]]) -> Any:
        """Await ``receive()``; return ``INTERRUPTED`` if :meth:`interrupt` ended it."""
        if not self._asyncio:
            return await self._wait_in_scope(receive)
        task = self._task = asyncio.current_task()
        try:
            result = await receive()
        except asyncio.CancelledError:
            if not self._interrupted or task is None:
                raise
            self._interrupted = False
            if task.uncancel() > 0:  # someone else cancelled this task too
                raise
            return INTERRUPTED
        finally:
            self._task = None
        if self._interrupted and task is not None:
            await self._take_back(task)
        return result

    async def _take_back(self, task: asyncio.Task[Any]) -> None:
        """The receive returned although we cancelled it: it was already done (the cancel
        is still pending) or code under it swallowed the cancel (websockets' legacy close
        does, while it waits for the peer). Either way take the cancel back, or it would
        hit whatever the task awaits next (a task group's exit, say)."""
        self._interrupted = False
        try:
            await asyncio.sleep(0)  # a pending cancel is delivered here, and nowhere else
        except asyncio.CancelledError:
            if task.uncancel() > 0:  # someone else cancelled this task too
                raise
            return
        if task.uncancel() > 0:  # a real cancel arrived with ours and was swallowed too
            raise asyncio.CancelledError

    def interrupt(self) -> None:
        """End the pending wait, if there is one (from another task)."""
        if self._task is not None and not self._interrupted:
            self._interrupted = True
            self._task.cancel()
        elif self._scope is not None:
            self._scope.cancel()

    async def _wait_in_scope(self, receive: Callable[[], Awaitable[Any]]) -> Any:
        with anyio.CancelScope() as scope:
            self._scope = scope
            try:
                return await receive()
            finally:
                self._scope = None
        return INTERRUPTED
