"""The outbound half of a connection: inline sends, a bounded outbox, one writer.

A message is sent inline from the caller's task when nothing is in flight; if the
send suspends (asyncio) or inline sending is off (trio), a writer task takes over
and every later message queues behind it in the bounded :class:`Outbox` until the
writer catches up. Per-connection order is therefore always publish order.

The writer is started in the connection's task group only when there is something to
wait for (a suspended send, a queue, a close) and ends when the connection is idle
again, so an idle connection holds no task and no event. There is never more than one.
The writer is also the only place that closes the socket, so a close frame never races
a data frame.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any

import anyio
from anyio.abc import TaskGroup
from starlette.types import Message

from .._sendseam import SendSeam
from . import _inline
from ._inbound import frame_size as payload_size
from ._settings import ConnectionSettings
from .backpressure import Outbox, Pushed
from .state import ConnectionState
from .stats import ManagerStats

__all__ = ["Sender"]

logger = logging.getLogger("asgi_rt.connections")

SendCoroutine = Callable[[Message], Coroutine[Any, Any, None]]

OPEN, CLOSING, CLOSED = ConnectionState.OPEN, ConnectionState.CLOSING, ConnectionState.CLOSED


class _CloseRequest:
    __slots__ = ("code", "drain", "reason")

    def __init__(self, code: int, reason: str, drain: bool) -> None:
        self.code, self.reason, self.drain = code, reason, drain


class Sender:
    """Owns one connection's outbound path. Created and run by ``Connection``."""

    __slots__ = (
        "_busy",
        "_close",
        "_close_sent",
        "_closed_event",
        "_flushed_event",
        "_inline",
        "_on_closed",
        "_outbox",
        "_pending",
        "_pending_frame",
        "_seam",
        "_send",
        "_send_control",
        "_send_scope",
        "_settings",
        "_stats",
        "_task_group",
        "_writing",
        "peer_gone",
        "state",
    )  # fmt: skip

    def __init__(
        self,
        send: SendCoroutine,
        send_control: SendCoroutine,
        settings: ConnectionSettings,
        stats: ManagerStats,
        *,
        inline: bool,
        on_closed: Callable[[], None],
        seam: SendSeam | None = None,
    ) -> None:
        self._send = send  # data frames (with a seam: its send, below asgi_rt's middleware)
        self._send_control = send_control  # the close frame, through Starlette's bookkeeping
        self._settings = settings
        self._stats = stats
        self._inline = inline
        self._on_closed = on_closed
        self._outbox = Outbox(
            max_messages=settings.queue_size,
            max_bytes=settings.queue_bytes,
            overflow=settings.overflow,
        )
        self._busy = False
        self._pending: _inline.Resume | None = None
        self._pending_frame: tuple[Message, int, float] | None = None  # with a seam only
        self._seam = seam
        if seam is not None:
            seam.on_revoke(self._revoked)
        self._close: _CloseRequest | None = None
        self._close_sent = False
        self._send_scope: anyio.CancelScope | None = None
        self._task_group: TaskGroup | None = None
        self._writing = False
        self._closed_event: anyio.Event | None = None  # made only if someone waits
        self._flushed_event: anyio.Event | None = None  # likewise
        self.peer_gone = False
        self.state: ConnectionState = OPEN  # the connection's one state; only moves forward

    @property
    def close_code(self) -> int | None:
        return None if self._close is None else self._close.code

    @property
    def close_reason(self) -> str | None:
        return None if self._close is None else self._close.reason

    @property
    def queued(self) -> int:
        return len(self._outbox)

    @property
    def busy(self) -> bool:
        """Whether a send is in flight or messages wait behind one."""
        return self._busy

    def peer_closed(self, code: int) -> None:
        """The peer went away with ``code``: no close frame is owed to it."""
        self.peer_gone = True
        self.request_close(code, "", drain=False)

    def deliver(self, message: Any, size: int, key: Hashable | None = None) -> bool:
        """Send or queue ``message`` without awaiting the socket.

        Returns:
            ``True`` if the message was sent or queued, ``False`` if it was dropped
            (connection closing, or the overflow policy refused it).
        """
        if self.state is not OPEN:
            self._stats.dropped_closed += 1
            return False
        if self._busy:
            return self._enqueue(message, size, key)
        if not self._inline:
            self._busy = True
            self._outbox.push(message, size, key)
            self._start_writer()
            return True
        coro = self._send(message)
        try:  # run the send up to its first suspension (see _inline)
            yielded = coro.send(None)
        except StopIteration:
            self._stats.sent += 1
            seam = self._seam
            if seam is not None:
                tally = seam.tally
                if tally is not None:  # the hot path: counted in bulk, read at scrape time
                    tally.add(size, message.get("text") is not None)
                else:
                    seam.sent(message, size, 0.0)
            return True
        except Exception as exc:
            if self._seam is not None:
                self._seam.sent(message, size, 0.0)
            self._send_failed(exc)
            return False
        self._pending = _inline.Resume(coro, yielded)
        if self._seam is not None:
            self._pending_frame = (message, size, time.perf_counter())
        self._busy = True
        self._start_writer()
        return True

    def request_close(self, code: int, reason: str, *, drain: bool) -> None:
        """Ask the writer to close with ``code``; with ``drain``, after the outbox empties.

        The first request decides the code; a later non-draining request only hurries it.
        """
        if self._close is None:
            self._close = _CloseRequest(code, reason, drain)
            if self.state is OPEN:
                self.state = CLOSING
        elif not drain:
            self._close.drain = False
        if not self._close.drain and self._send_scope is not None:
            self._send_scope.cancel()
        self._start_writer()

    def attach(self, task_group: TaskGroup) -> None:
        """Give the sender the connection's task group to start its writer in."""
        self._task_group = task_group
        if self._busy or self._close is not None:
            self._start_writer()

    async def wait_closed(self) -> None:
        if self.state is CLOSED:
            return
        if self._closed_event is None:
            self._closed_event = anyio.Event()
        await self._closed_event.wait()

    async def wait_flushed(self) -> None:
        """Return once nothing is in flight or queued (or the connection is closed)."""
        while self._busy and self.state is not CLOSED:
            if self._flushed_event is None:
                self._flushed_event = anyio.Event()
            await self._flushed_event.wait()

    def _flushed(self) -> None:
        self._busy = False
        if self._flushed_event is not None:
            self._flushed_event.set()
            self._flushed_event = None

    def _start_writer(self) -> None:
        if not self._writing and self._task_group is not None and self.state is not CLOSED:
            self._writing = True
            self._task_group.start_soon(self._write)

    async def _write(self) -> None:
        """The writer: flush, close if asked; end once idle (a later send starts another)."""
        try:
            if self._close is None or self._close.drain:
                await self._flush()
            if self._close is not None:
                await self.send_close()
                self.finish()
        except BaseException:
            self.finish()
            raise
        finally:
            self._writing = False

    async def send_close(self) -> None:
        """Send the close frame once, bounded by ``close_timeout``; never raises."""
        if self._close_sent or self.peer_gone:
            return
        self._close_sent = True
        request = self._close or _CloseRequest(1000, "", False)
        message = {"type": "websocket.close", "code": request.code, "reason": request.reason}
        with anyio.move_on_after(self._settings.close_timeout):
            try:
                await self._send_control(message)
            except Exception:  # the peer vanished first; nothing left to tell it
                self.peer_gone = True

    def finish(self) -> None:
        """Release everything the outbound path holds. Idempotent, synchronous."""
        if self.state is CLOSED:
            return
        self.state = CLOSED
        if self._pending is not None:
            self._pending.close()
            self._pending = None
        self._direct_frame_done()  # a direct frame cut off here still counts
        self._stats.discarded_on_close += self._outbox.clear()
        if self._closed_event is not None:
            self._closed_event.set()
        self._flushed()
        if self._seam is None or not self._seam.revoked:
            self._on_closed()  # revoked: the revoker ends the app's receive after its close

    async def _flush(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            sent = await self._await_send(pending)
            self._direct_frame_done()
            if not sent:
                return
        while self._close is None or self._close.drain:
            message = self._outbox.pop()
            if message is None:
                self._flushed()
                return
            if self._seam is not None:
                self._pending_frame = (message, frame_size(message), time.perf_counter())
            sent = await self._await_send(self._send(message))
            if self._pending_frame is not None:  # with a seam only: no call per frame without
                self._direct_frame_done()
            if not sent:
                return
            if self._settings.queue_wait is not None:
                self._settings.queue_wait.observe(time.perf_counter() - self._outbox.last_queued_at)

    async def _await_send(self, send: Awaitable[None]) -> bool:
        """Await one send under ``send_timeout``; on failure, arrange the close and say so."""
        with anyio.move_on_after(self._settings.send_timeout) as scope:
            self._send_scope = scope
            try:
                await send
            except Exception as exc:
                self._send_failed(exc)
                return False
            finally:
                self._send_scope = None
        if scope.cancelled_caught:
            if self._close is None:
                self._stats.send_timeouts += 1
                self.request_close(1013, "send timeout", drain=False)
            return False
        self._stats.sent += 1
        return True

    def _enqueue(self, message: Any, size: int, key: Hashable | None) -> bool:
        outcome = self._outbox.push(message, size, key)
        stats = self._stats
        if outcome is Pushed.QUEUED:
            stats.queued += 1
            return True
        if outcome is Pushed.COALESCED:
            stats.coalesced += 1
            stats.dropped_oldest += self._outbox.dropped  # a bigger value may evict others
            return True
        if outcome is Pushed.DROPPED_OLDEST:
            stats.queued += 1
            stats.dropped_oldest += self._outbox.dropped
            return True
        if outcome is Pushed.DROPPED_NEWEST:
            stats.dropped_newest += 1
            return False
        stats.slow_consumer_disconnects += 1
        self.request_close(1013, "slow consumer", drain=False)
        return False

    def _direct_frame_done(self) -> None:
        """The direct frame being written was sent, failed or cut off: the seam counts it
        (the middleware's wrapper counts those too) with the time it took."""
        if self._pending_frame is None:
            return
        message, size, started = self._pending_frame
        self._pending_frame = None
        assert self._seam is not None  # only set with a seam; keeps mypy's narrowing
        self._seam.sent(message, size, time.perf_counter() - started)

    def _revoked(self, code: int, reason: str) -> None:
        """The seam was revoked (a middleware is closing the socket): send nothing more.
        The receive is left alone: interrupting it could cancel the middleware's close
        send (a refresh fails inside the app's receive), and the middleware ends it."""
        self.peer_gone = True  # the middleware sends the close frame, not us
        self.request_close(code, reason, drain=False)

    def _send_failed(self, exc: Exception) -> None:
        logger.debug("send failed, peer gone: %r", exc)
        self._stats.send_errors += 1
        self.peer_gone = True
        self.request_close(1006, "send failed", drain=False)


def frame_size(message: Message) -> int:
    """Payload bytes of a ``websocket.send`` message."""
    text = message.get("text")
    return payload_size(text if text is not None else message.get("bytes") or b"")
