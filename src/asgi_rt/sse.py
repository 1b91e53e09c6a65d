"""Server-Sent Events on the same managers as WebSockets.

An :class:`EventStreamResponse` registers the request as a :class:`~asgi_rt.Connection`
of a :class:`~asgi_rt.ConnectionManager` or :class:`~asgi_rt.RoomManager`, whose transport
is a ``text/event-stream`` response instead of a socket. It therefore has the same bounded
queue, overflow policy, send timeout and metrics as a WebSocket member, and one
``publish`` (or ``broadcast``) reaches WebSocket and SSE members alike::

    @app.get("/events/{room}")
    async def events(room: str, rooms: RoomManager = Depends(get_rooms)):
        return EventStreamResponse(rooms, room=room)

What each member gets as ``data:`` is exactly the text a WebSocket member gets as a frame.
Room publications also carry ``id: <epoch>:<seq>``: when the browser's ``EventSource``
reconnects it sends that back as ``Last-Event-ID`` and the stream resumes the room from
its history (in order, without duplicates, or with a ``recovery_failed`` message).

Framing uses sse-starlette's ``ServerSentEvent`` (multi-line data, ``id``, ``event``,
``retry``, comments); its ``EventSourceResponse`` is not used because it pulls from an
iterator, which would put a second, unbounded-by-policy buffer in front of ours.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable
from contextlib import AsyncExitStack, aclosing
from typing import Any

import anyio
import anyio.lowlevel
from sse_starlette.event import ServerSentEvent
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from ._eventstream import EventStream, Preframed, encoder_for, format_event
from .backends.base import PositionStore
from .connections.connection import Connection
from .connections.manager import ConnectionManager
from .connections.state import ConnectionState
from .exceptions import Forbidden
from .rooms import RoomManager
from .rooms._frames import room_notice

__all__ = ["EventStreamResponse", "ServerSentEvent", "format_event", "parse_last_event_id"]

logger = logging.getLogger("asgi_rt.sse")

_REFUSED = {401: "authentication required", 403: "forbidden"}

OnConnect = Callable[[Connection], Awaitable[None]]


def parse_last_event_id(value: str | None) -> tuple[int, str | None] | None:
    """``"<epoch>:<seq>"`` → ``(seq, epoch)`` (``":<seq>"``: a room not yet published to,
    whose epoch is unknown); ``None`` for anything else."""
    if not value or ":" not in value:
        return None
    epoch, _, seq = value.rpartition(":")
    if not (seq.isascii() and seq.isdigit()) or len(seq) > 18:  # "²".isdigit(); int() refuses
        return None
    return int(seq), epoch or None


class EventStreamResponse(Response):
    """A ``text/event-stream`` response whose client is a member of ``manager``.

    The request becomes a :class:`Connection` for the response's lifetime: ``broadcast``,
    ``publish`` and ``conn.send`` reach it as events, through its bounded queue. It ends
    when the client goes away (an ``http.disconnect`` ends it at once), when the manager
    closes it (overflow, send timeout, shutdown: a final ``event: close`` event carries
    ``{"code", "reason"}`` so that a client can tell "try later" from "stop"), or when
    ``source`` is exhausted.

    Args:
        manager: the manager to register with.
        room: for a :class:`RoomManager`, the room to join. A ``Last-Event-ID`` header
            from a reconnecting ``EventSource`` (or ``since``/``epoch``) resumes it. The
            manager's ``authorize(scope["user"], "subscribe", room)`` is asked first: a
            refusal is a plain 401 (no ``scope["user"]``) or 403 before any event.
        since: resume ``room`` after this ``seq`` (overrides ``Last-Event-ID``).
        epoch: the room's epoch that ``since`` belongs to.
        on_connect: ``async (conn) -> None`` run once the stream is open, e.g. to join
            more rooms (only ``room`` resumes) or to send a snapshot.
        source: an async iterable of events for this client only (``str``/``dict``/``list``
            as data, or ``ServerSentEvent``), sent at the client's pace: the next item is
            pulled only once the previous one has been written. It is closed with
            ``aclosing`` when the client goes away; the stream ends after its last item.
        heartbeat: seconds between ``: ping`` comments while nothing else is sent (keeps
            proxies from timing the stream out and finds dead clients); ``None`` for none.
        retry: milliseconds the browser should wait before reconnecting (``retry:``).
        headers: extra response headers.
        **meta: stored on ``conn.meta``, as with ``manager.connect``.
    """

    media_type = "text/event-stream"

    def __init__(
        self, manager: ConnectionManager, *, room: str | None = None, since: int | None = None,
        epoch: str | None = None, on_connect: OnConnect | None = None,
        source: AsyncIterable[Any] | None = None, heartbeat: float | None = 15.0,
        retry: int | None = None, headers: dict[str, str] | None = None, **meta: Any,
    ) -> None:  # fmt: skip
        if heartbeat is not None and not heartbeat > 0:
            raise ValueError(f"heartbeat must be > 0 or None, got {heartbeat!r}")
        if retry is not None and (not isinstance(retry, int) or retry < 0):
            raise ValueError(f"retry must be a non-negative int of milliseconds, got {retry!r}")
        if room is not None and not isinstance(manager, RoomManager):
            raise TypeError(f"room= needs a RoomManager, got {type(manager).__name__}")
        self.manager, self.room, self.since, self.epoch = manager, room, since, epoch
        self.on_connect, self.source = on_connect, source
        self.heartbeat, self.retry, self.meta = heartbeat, retry, meta
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no",
                           **(headers or {})})  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await self._authorized(scope):  # before any byte of the stream
            status = 401 if scope.get("user") is None else 403
            await PlainTextResponse(_REFUSED[status], status)(scope, receive, send)
            return
        stream = EventStream(scope, receive, send, headers=self.raw_headers, room=self.room,
                             encoder=encoder_for(self.manager))  # fmt: skip
        async with self.manager.connect(stream, **self.meta) as conn:
            if self.retry is not None:
                await stream.write(format_event(retry=self.retry))  # no event: a field only
            try:
                await self._open(conn, Headers(scope=scope).get("last-event-id"))
            except Forbidden:  # revoked meanwhile, or on_connect joined a room it may not
                await conn.close(1008, "forbidden")
                return
            async with anyio.create_task_group() as tg:
                if self.heartbeat is not None:
                    tg.start_soon(_beat, conn, self.heartbeat)
                if self.source is not None:
                    tg.start_soon(_pump, conn, self.source)
                await conn.receive()  # None once the client left or the stream was closed
                tg.cancel_scope.cancel()

    async def _authorized(self, scope: Scope) -> bool:
        """``authorize(scope["user"], "subscribe", room)`` of a RoomManager's stream."""
        if self.room is None or not isinstance(self.manager, RoomManager):
            return True
        return await self.manager.authorized(scope.get("user"), "subscribe", self.room)

    async def _open(self, conn: Connection, last_event_id: str | None) -> None:
        rooms = self.manager
        if self.room is not None and isinstance(rooms, RoomManager):
            since, epoch = self.since, self.epoch
            if since is None and last_event_id is not None:
                position = parse_last_event_id(last_event_id)
                if position is None:
                    await _refuse_position(rooms, conn, self.room)
                else:
                    since, epoch = position
            # announce: the stream's first event carries the room's position as its id, so a
            # reconnect before the first publication resumes too
            await rooms.join(conn, self.room, since=since, epoch=epoch,
                             announce=isinstance(rooms.backend, PositionStore))  # fmt: skip
        if self.on_connect is not None:
            await self.on_connect(conn)


async def _refuse_position(rooms: RoomManager, conn: Connection, room: str) -> None:
    """``recovery_failed`` for a ``Last-Event-ID`` that names no position, with the id of
    the room's current one, so that the browser stops resending the bad one."""
    if isinstance(rooms.backend, PositionStore):
        seq, epoch = await rooms.position(room)
        conn.deliver(*room_notice(room, "recovery_failed", {"reason": "unknown position"},
                                  seq, epoch))  # fmt: skip
    else:
        await conn.send({"type": "recovery_failed", "room": room, "reason": "unknown position"})


HEARTBEAT = Preframed(format_event(comment="ping"), 0)


async def _beat(conn: Connection, interval: float) -> None:
    """A comment every ``interval`` s in which nothing else was on its way."""
    while True:
        await anyio.sleep(interval)
        if conn.state is ConnectionState.OPEN and not conn.busy:
            conn.deliver(HEARTBEAT, 0)


async def _pump(conn: Connection, source: AsyncIterable[Any]) -> None:
    """Send ``source``'s items at the client's pace, then close the stream: 1000, or 1011
    if the source raised (logged; the server never sees the error)."""
    try:
        await _pump_items(conn, source)
    except Exception:
        logger.exception("the event source of SSE connection %s raised", conn.id)
        conn.request_close(1011, "internal error", drain=True)
    else:
        conn.request_close(1000, "", drain=True)


async def _pump_items(conn: Connection, source: AsyncIterable[Any]) -> None:
    iterator = aiter(source)
    async with AsyncExitStack() as stack:
        if isinstance(iterator, AsyncGenerator):
            await stack.enter_async_context(aclosing(iterator))
        async for item in iterator:
            if conn.state is not ConnectionState.OPEN:
                return
            if isinstance(item, ServerSentEvent):
                conn.deliver(Preframed(_reframe(item), 1), 0)
            else:
                await conn.send(item)
            await conn.wait_flushed()
            await anyio.lowlevel.checkpoint()  # a write that never blocks must not starve others


def _reframe(event: ServerSentEvent) -> bytes:
    return format_event(None if event.data is None else str(event.data), event=event.event,
                        id=event.id, retry=event.retry, comment=event.comment)  # fmt: skip
