"""One live WebSocket connection: bounded outbound path, checked inbound path."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Hashable
from functools import partial
from typing import Any

from anyio.abc import TaskGroup
from starlette.websockets import WebSocketState

from ..exceptions import (
    ConnectionClosed,
    InvalidData,
    MessageTooBig,
    ProtocolViolation,
    RateLimitExceeded,
)
from . import _sender
from ._encode import encode
from ._inbound import (
    Frames,
    count_violation,
    error_frame,
    frame_size,
    next_frame,
    next_json,
    next_text,
)
from ._interrupt import INTERRUPTED, Interruptible
from ._requests import PendingRequests
from ._settings import ConnectionSettings
from ._starlette import data_receive, data_send, send_seam
from ._transport import DataTransport, Transport
from .heartbeat import is_pong
from .ratelimit import TokenBucket
from .state import ConnectionState
from .stats import ManagerStats

__all__ = ["Connection"]


class Connection:
    """A registered WebSocket with a bounded outbound queue and one writer.

    Made by :meth:`ConnectionManager.connect`; do not construct it yourself.

    Sending (:meth:`send`, or the manager's ``broadcast``) never awaits the socket:
    the frame is written inline when the transport takes it at once, otherwise it
    waits in a queue bounded by ``queue_size``/``queue_bytes`` and the manager's
    overflow policy decides what a full queue means. There is no other buffering.

    Receiving (``async for message in conn``, :meth:`iter_text`, :meth:`iter_json`)
    enforces ``max_message_size`` (close 1009) and ``rate_limit`` (close 1008) and
    ends cleanly, without raising, when the peer or the server closes.

    Attributes:
        id: the id the connection is registered under.
        meta: the keyword arguments given to ``connect``, for the application's use.
        websocket: the underlying Starlette ``WebSocket`` (for an SSE subscriber, the event
            stream that stands in for it).
        kind: ``"websocket"`` or ``"sse"`` (an SSE subscriber only receives).
    """

    __slots__ = (
        "__weakref__", "_bucket", "_invalid", "_pending_receive", "_receive", "_requests",
        "_sender", "_settings", "_stats", "_swallow_pongs", "_track_activity", "id", "kind",
        "last_seen", "meta", "ping_sent_at", "websocket",
    )  # fmt: skip

    def __init__(
        self,
        websocket: Transport,
        *,
        id: str,
        meta: dict[str, Any],
        settings: ConnectionSettings,
        stats: ManagerStats,
        inline: bool,
        on_asyncio: bool,
        direct: bool = False,
    ) -> None:
        self.id = id
        self.meta = meta
        self.websocket = websocket
        self.kind: str = websocket.kind if isinstance(websocket, DataTransport) else "websocket"
        self._settings = settings
        self._stats = stats
        self._bucket = None if settings.rate_limit is None else TokenBucket(settings.rate_limit)
        self._invalid = 0
        self._pending_receive = Interruptible(on_asyncio=on_asyncio)
        self._receive = data_receive(websocket)
        self._swallow_pongs = settings.heartbeat
        self._track_activity = settings.track_activity
        self.last_seen = time.monotonic()  # the last inbound frame (heartbeat, idle timeout)
        self.ping_sent_at: float | None = None
        self._requests: PendingRequests | None = None  # made by the first request()
        seam = send_seam(websocket) if direct else None
        self._sender = _sender.Sender(
            data_send(websocket) if seam is None else seam.send,
            websocket.send,
            settings,
            stats,
            inline=inline,
            on_closed=self._cancel_receive,
            seam=seam,
        )

    def __repr__(self) -> str:
        return f"<Connection id={self.id!r} state={self.state}>"

    @property
    def state(self) -> ConnectionState:
        """``OPEN``, ``CLOSING`` or ``CLOSED`` (a ``StrEnum``: equal to ``"open"`` etc.)."""
        return self._sender.state

    @property
    def close_code(self) -> int | None:
        """The close code once a close was decided (1006 when the peer vanished)."""
        return self._sender.close_code

    @property
    def close_reason(self) -> str | None:
        return self._sender.close_reason

    @property
    def queued(self) -> int:
        """Messages waiting behind a pending send right now."""
        return self._sender.queued

    @property
    def busy(self) -> bool:
        """Whether a send is in flight or messages wait behind one (``False`` when idle)."""
        return self._sender.busy

    async def send(self, data: Any, *, key: Hashable | None = None) -> bool:
        """Send ``data`` to this peer without awaiting its socket.

        ``str`` is sent as text, ``bytes`` as binary, ``dict``/``list`` as JSON text.

        Args:
            data: the payload.
            key: for ``Overflow.COALESCE``, the key a newer message replaces an older one by.

        Returns:
            ``True`` if sent or queued; ``False`` if the overflow policy dropped it.

        Raises:
            ConnectionClosed: the connection is closing or closed.
            TypeError: ``data`` is of a type that cannot be sent, or holds a value JSON has
                no form for (the message names it and where it is).
            ValueError: ``data`` cannot be valid JSON or UTF-8 text (``NaN``, ``Infinity``,
                a lone surrogate...); nothing was sent and the connection stays open.
        """
        if self._sender.state is not _sender.OPEN:
            raise ConnectionClosed(
                f"cannot send on connection {self.id!r}: it is {self.state}",
                code=self.close_code, reason=self.close_reason,
            )  # fmt: skip
        message, size = encode(data, self._settings.dumps)
        return self._sender.deliver(message, size, key)

    def deliver(self, message: Any, size: int, key: Hashable | None = None) -> bool:
        """Send or queue an already-encoded ASGI message without awaiting the socket: the
        synchronous path managers use to fan one shared message out (see ``send``).

        Returns:
            ``True`` if sent or queued; ``False`` if dropped (the connection is closing or
            closed, or the overflow policy refused it; the stats count which).
        """
        return self._sender.deliver(message, size, key)

    async def request(self, type: str, data: Any = None, *, timeout: float = 5.0) -> Any:
        """Send ``{"type": type, "data": data, "id": ...}`` and wait for the client's ack.

        The client answers ``{"type": "ack", "id": <the same id>, "data": ...}``; this
        returns that ``data``. Acks are delivered by :class:`~asgi_rt.messages.Router` (or
        by calling :meth:`resolve_ack` yourself). At most ``max_pending_requests`` wait at once.

        Raises:
            RequestFailed: no ack within ``timeout`` seconds, or too many pending.
            ConnectionClosed: the connection is closed.
        """
        if self._requests is None:
            self._requests = PendingRequests(self._settings.max_pending_requests)
        return await self._requests.call(self.send, type, data, timeout)

    def resolve_ack(self, request_id: Any, data: Any) -> bool:
        """Hand a client's ack to the pending :meth:`request`; ``False`` if none waits."""
        return self._requests is not None and self._requests.resolve(request_id, data)

    async def close(self, code: int = 1000, reason: str = "", *, drain: bool = True) -> None:
        """Close the connection, by default after the queued messages are written.

        Waits at most ``send_timeout`` per queued message plus ``close_timeout``.
        """
        self._sender.request_close(code, reason, drain=drain)
        await self._sender.wait_closed()

    def request_close(self, code: int = 1000, reason: str = "", *, drain: bool = True) -> None:
        """Decide the close without waiting for it (the synchronous half of :meth:`close`).

        The first request decides the code; a later one without ``drain`` only hurries it.
        """
        self._sender.request_close(code, reason, drain=drain)

    def peer_closed(self, code: int) -> None:
        """Record that the peer went away with ``code`` (no close frame is owed to it)."""
        self._sender.peer_closed(code)

    def attach(self, task_group: TaskGroup) -> None:
        """Give the connection the task group its writer runs in (done by the manager)."""
        self._sender.attach(task_group)

    async def finish(self) -> None:
        """Send the close frame if one is still owed, then release the outbound path.

        Called by the manager as the connection ends (shielded); idempotent.
        """
        if self.websocket.application_state is WebSocketState.CONNECTED:
            await self._sender.send_close()  # no-op if the writer sent it or the peer is gone
        self._sender.finish()

    async def wait_closed(self) -> None:
        """Return once the connection is closed (by either side)."""
        await self._sender.wait_closed()

    async def wait_flushed(self) -> None:
        """Return once every message sent so far has been written (or the connection closed).

        ``send`` never waits; a producer that should go at its reader's pace instead of
        filling the queue (a per-client token stream, say) awaits this between messages.
        """
        await self._sender.wait_flushed()

    async def receive(self) -> str | bytes | None:
        """Return the next frame's payload, or ``None`` once the connection has ended.

        Frames over ``max_message_size`` close with 1009, frames over the rate limit
        with 1008; in both cases this returns ``None``. So does a receive after the
        connection started closing (a failed send, a slow-consumer close, ``close_all``),
        so that an echo loop never sends into a closing connection.
        """
        while self._sender.state is _sender.OPEN:  # once a close is decided, frames are moot
            message = await self._pending_receive.wait(self._receive)
            if message is INTERRUPTED:  # the manager closed the connection meanwhile
                return None
            if message["type"] == "websocket.disconnect":
                self._sender.peer_closed(message.get("code", 1005))
                return None
            data: str | bytes | None = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            if self._track_activity:
                self.last_seen = time.monotonic()
            if self._swallow_pongs and is_pong(data):
                continue  # a heartbeat answer is not the app's business
            return await self._check(data)
        return None

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return Frames(partial(next_frame, self.receive))

    def iter_text(self) -> AsyncIterator[str]:
        """Iterate text frames; a binary frame closes the connection with 1003."""
        return Frames(partial(next_text, self.receive, self._violate))

    def iter_json(self) -> AsyncIterator[Any]:
        """Iterate decoded JSON frames (text, or UTF-8 binary).

        A frame that is not valid JSON is answered with
        ``{"type": "error", "data": {"code": "invalid_json", "message": ...}}`` and skipped; after
        ``max_invalid_frames`` such frames the connection is closed with 1007. So is a frame
        nested deeper than ``max_json_depth``, with ``NaN``/``Infinity``, a number that
        overflows to infinity or a lone surrogate (``"\\ud800"``): whatever this yields can
        be sent back as it is.
        """
        max_depth = self._settings.max_json_depth
        return Frames(partial(next_json, self.receive, self.reject_frame, max_depth))

    async def _check(self, data: str | bytes) -> str | bytes | None:
        limit = self._settings.max_message_size
        if limit is not None and len(data) > limit // 4 and frame_size(data) > limit:
            await self._violate(MessageTooBig(f"frame of {frame_size(data)} bytes exceeds {limit}"))
            return None
        if self._bucket is not None and not self._bucket.take():
            await self._violate(RateLimitExceeded())
            return None
        return data

    async def reject_frame(
        self, code: str, message: str, id: Any = None, *, invalid: bool = True
    ) -> bool:
        """Answer a frame with ``{"type": "error", "data": {"code", "message"}, "id"}``.

        A frame that was ``invalid`` (the default) counts towards ``max_invalid_frames``;
        at that many the connection is closed with 1007 instead. A valid frame whose
        handling failed (``invalid=False``) is answered without counting.

        Returns:
            ``False`` once the connection has been closed for it.
        """
        if self._sender.state is not _sender.OPEN:
            return False
        if invalid:
            self._stats.invalid_frames += 1
            self._invalid += 1
        if invalid and self._invalid >= self._settings.max_invalid_frames:
            await self._violate(InvalidData(f"{self._invalid} invalid frames: {message}",
                                            reason="too many invalid frames"))  # fmt: skip
            return False
        frame = error_frame(code, message, id)
        self._sender.deliver(*encode(frame, self._settings.dumps))
        return True

    async def _violate(self, exc: ProtocolViolation) -> None:
        count_violation(self._stats, exc)
        await self.close(exc.code, exc.reason, drain=False)

    def _cancel_receive(self) -> None:
        self._pending_receive.interrupt()
