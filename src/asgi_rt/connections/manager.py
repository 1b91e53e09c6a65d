"""ConnectionManager: the registry of live connections and fan-out over them."""

from __future__ import annotations

from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Coroutine,
    Hashable,
    Iterable,
)
from contextlib import asynccontextmanager
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
import anyio.lowlevel
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .._background import Background
from .._json import DEFAULT_MAX_DEPTH
from ._encode import Dumps, compact_dumps, encode
from ._fanout import fan_out
from ._lifecycle import close_spread, on_asyncio, refuse
from ._options import ManagerOptions
from ._registry import ConnectionRegistry
from ._settings import ConnectionSettings
from ._transport import Transport
from .backpressure import Overflow
from .connection import Connection
from .heartbeat import Heartbeat, sweep_forever
from .ratelimit import RateLimit

if TYPE_CHECKING:
    from ..metrics import Metrics

__all__ = ["ConnectionManager", "ManagerOptions"]

MiB = 1024 * 1024


class ConnectionManager(ConnectionRegistry):
    """Registry of live WebSocket connections with backpressure-aware fan-out.

    Each connection gets a bounded outbound queue and one writer task. ``send`` and
    :meth:`broadcast` never await a socket: a frame the transport accepts at once is
    written inline by the caller; only a send that would block is handed to that
    connection's writer, and later messages queue behind it up to ``queue_size``
    messages (and ``queue_bytes`` bytes). When the queue is full, ``overflow``
    decides: close 1013, drop the oldest, drop the newest, or coalesce by key. One
    slow peer therefore never delays another, and nothing buffers without bound.

    Args:
        queue_size: most messages queued per connection behind a pending send.
        queue_bytes: most payload bytes queued per connection, or ``None``.
        overflow: the policy for a full queue (:class:`Overflow`).
        send_timeout: seconds one send may block before the connection is closed
            1013 (a peer that stopped reading); ``None`` waits forever.
        max_message_size: largest inbound frame in bytes; larger closes 1009.
        rate_limit: inbound token bucket per connection; exceeding it closes 1008.
        max_invalid_frames: bad JSON frames tolerated per connection before 1007.
        max_json_depth: deepest nesting ``iter_json`` decodes (1..500); a deeper frame is
            answered ``invalid_json`` like any bad JSON, before it can exhaust the stack.
        close_timeout: seconds to wait for a close frame to be written.
        inline_send: write frames from the caller's task when they do not block.
            ``None`` (default) enables it under asyncio and not under trio.
        direct_send: write data frames below asgi_rt's middleware (with the ``send`` the
            outermost of ``TelemetryMiddleware``/``FirstMessageAuthMiddleware`` was given)
            instead of through every middleware's ``send`` wrapper; telemetry still counts
            each frame (count, size, the close record's totals; a send that completed at
            once is observed as 0 s) but gives it no send span, send event or exemplar;
            auth still stops frames the moment it closes a socket (the connection's
            ``close_reason`` is auth's, e.g. ``"token expired"``). Off by default: a
            ``send``-wrapping middleware of your own *inside* asgi_rt's outermost one
            would not see data frames (accept and close still pass through it). No effect
            without those middlewares, nor on SSE subscribers.
        dumps: JSON encoder for dict/list payloads (called once per broadcast). The default
            refuses what is not standard JSON (``NaN``, ``Infinity``, lone surrogates) with
            a ``ValueError`` at the caller; a replacement must produce standard JSON too.
        heartbeat: app-level ping/pong (:class:`~asgi_rt.connections.heartbeat.Heartbeat`);
            an unanswered ping closes 4001 ``heartbeat timeout``.
        idle_timeout: seconds without an inbound frame before closing 4000 ``idle timeout``.
        drain_window: seconds over which leaving ``async with manager`` spreads its closes
            (``close_all(window=...)``), so that clients do not all reconnect at once. Under
            uvicorn, which closes every socket before the lifespan shutdown, use
            :func:`~asgi_rt.connections.drain.drain_on_signal` instead.
        metrics: export queue wait, queue depth, drops and slow-consumer closes into
            this :class:`~asgi_rt.metrics.Metrics` (depth and counters are read from
            ``stats()`` at scrape time, so they cost nothing per message; in multiprocess
            mode written once a second while the manager is entered).

    Raises:
        ValueError: a bound is out of range.
        TypeError: an option has the wrong type.
    """

    def __init__(
        self,
        *,
        queue_size: int = 256,
        queue_bytes: int | None = None,
        overflow: Overflow = Overflow.DISCONNECT,
        send_timeout: float | None = 5.0,
        max_message_size: int | None = MiB,
        rate_limit: RateLimit | None = None,
        max_invalid_frames: int = 5,
        max_json_depth: int = DEFAULT_MAX_DEPTH,
        close_timeout: float = 2.0,
        inline_send: bool | None = None,
        direct_send: bool = False,
        dumps: Dumps = compact_dumps,
        metrics: Metrics | None = None,
        heartbeat: Heartbeat | None = None,
        idle_timeout: float | None = None,
        drain_window: float = 0.0,
    ) -> None:
        super().__init__()
        self._settings = ConnectionSettings(
            queue_size=queue_size, queue_bytes=queue_bytes, overflow=overflow,
            send_timeout=send_timeout, close_timeout=close_timeout,
            max_message_size=max_message_size, rate_limit=rate_limit,
            max_invalid_frames=max_invalid_frames, dumps=dumps, max_json_depth=max_json_depth,
            queue_wait=None if metrics is None else metrics.queue_wait.labels(),
            heartbeat=heartbeat is not None,
            track_activity=heartbeat is not None or idle_timeout is not None,
        )  # fmt: skip
        if idle_timeout is not None and not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be > 0 or None, got {idle_timeout!r}")
        if not drain_window >= 0:
            raise ValueError(f"drain_window must be >= 0, got {drain_window!r}")
        self._drain_window = drain_window
        self._heartbeat, self._idle_timeout = heartbeat, idle_timeout
        self._background = Background()
        self._running = False
        self._inline_send = inline_send
        if not isinstance(direct_send, bool):
            raise TypeError(f"direct_send must be a bool, got {direct_send!r}")
        self._direct_send = direct_send
        self._metrics = metrics
        if metrics is not None:
            metrics.watch(self)

    @property
    def overflow(self) -> Overflow:
        return self._settings.overflow

    @asynccontextmanager
    async def connect(
        self,
        websocket: WebSocket | Transport,
        *,
        id: str | None = None,
        subprotocol: str | None = None,
        headers: Iterable[tuple[bytes, bytes]] | None = None,
        **meta: Any,
    ) -> AsyncIterator[Connection]:
        """Accept (if not yet accepted) and register ``websocket`` for the block's duration.

        The connection's writer runs in a task group that lives as long as the block
        (started only while a send is pending, so idle connections hold no task). On exit the
        connection is unregistered and closed: 1000 after draining its queue on a
        normal exit, 1011 if the block raised, 1001 if it was cancelled. A
        ``WebSocketDisconnect`` raised in the block is the peer leaving and is not
        re-raised. If the manager closes the connection (slow consumer, limits),
        a pending ``receive`` returns ``None`` and iteration ends.

        Raises:
            DuplicateConnectionId: ``id`` is already registered (the socket is not accepted).
        """
        conn = await self._admit(websocket, id, subprotocol, headers, meta)
        try:
            failure = None
            async with anyio.create_task_group() as tg:
                conn.attach(tg)  # the writer starts here only when it is needed
                try:
                    yield conn
                except anyio.get_cancelled_exc_class():
                    conn.request_close(1001, "going away", drain=False)
                    raise
                except WebSocketDisconnect as exc:
                    conn.peer_closed(exc.code)
                except Exception as exc:  # re-raised below, outside the task group
                    conn.request_close(1011, "internal error", drain=False)
                    failure = exc
                else:
                    conn.request_close(1000, "", drain=True)
            if failure is not None:
                raise failure
        finally:
            await self._release(conn)

    async def broadcast(
        self,
        data: object,
        *,
        exclude: Connection | Collection[Connection] | None = None,
        to: Iterable[Connection] | None = None,
        key: Hashable | None = None,
    ) -> int:
        """Send ``data`` to every connection (or those in ``to``) without awaiting a socket.

        The payload is encoded once and the same ASGI message is shared by every
        recipient. There's no backpressure on the caller: a recipient that cannot
        keep up is handled by the overflow policy, never by waiting.

        Args:
            data: ``str``, ``bytes``, ``dict`` or ``list``.
            exclude: a connection, or a collection of them, to skip (e.g. the sender).
            to: restrict the fan-out to these connections (e.g. a room's members).
            key: coalescing key for ``Overflow.COALESCE``.

        Returns:
            How many connections the message was sent or queued to.

        Raises:
            TypeError: ``data`` is of a type that cannot be sent, or holds a value JSON has
                no form for (the message names it and where it is).
            ValueError: ``data`` cannot be valid JSON or UTF-8 text (``NaN``, ``Infinity``,
                a lone surrogate...): nothing was sent to anyone.

        Under asyncio this does not suspend. Without inline sends (trio) it yields once
        at the end so that the writers can run.
        """
        message, size = encode(data, self._settings.dumps)
        targets = tuple(self._connections.values()) if to is None else to
        delivered = fan_out(message, size, targets, exclude, key)
        if self._inline_send is False:
            # Without inline sends every message waits for a writer task: yield once so the
            # writers run before the caller's next burst instead of letting queues fill.
            await anyio.lowlevel.checkpoint()
        return delivered

    async def close_all(
        self, code: int = 1001, reason: str = "server shutdown", *, timeout: float = 5.0,
        window: float = 0.0, retry_hint: bool = True,
    ) -> None:  # fmt: skip
        """Close every connection with ``code`` after draining its queue.

        With ``window`` > 0 the closes are spread evenly over that many seconds (in batches
        every 50 ms), so that thousands of clients do not all reconnect in the same second;
        their own backoff jitter spreads them further. Connections still draining
        ``timeout`` seconds after their close was requested are closed without waiting for
        their queue (each close frame still gets ``close_timeout``).

        With ``window`` > 0 and ``retry_hint``, each close reason ends with a suggested
        delay, ``"service restart; retry in 1.3s"``: the rest of the drain plus a uniform
        share of one more window, so that clients come back spread over the window after
        the drain. ``ResilientClient`` obeys it; a browser can read it from the close event.
        """
        await close_spread(
            tuple(self._connections.values()), code, reason, timeout=timeout, window=window,
            retry_hint=retry_hint, close_timeout=self._settings.close_timeout,
        )  # fmt: skip

    async def __aenter__(self) -> Self:
        await self._background.start(*self._background_tasks())
        self._running = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        try:
            await self.close_all(window=self._drain_window)
        finally:
            self._running = False
            await self._background.stop()

    def _background_tasks(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        """What runs while the manager is entered; subclasses add theirs."""
        tasks: list[Callable[[], Coroutine[Any, Any, None]]] = []
        if self._heartbeat is not None or self._idle_timeout is not None:
            sweep = partial(sweep_forever, self, self._heartbeat, self._idle_timeout, self._stats)
            tasks.append(sweep)
        if self._metrics is not None and self._metrics.multiprocess:
            tasks.append(partial(self._metrics.export_forever, self))
        return tasks

    async def _admit(
        self, websocket: Transport, id: str | None, subprotocol: str | None,
        headers: Iterable[tuple[bytes, bytes]] | None, meta: dict[str, Any],
    ) -> Connection:  # fmt: skip
        """Accept and register; registered only once accepted, so that a broadcast never
        races the handshake."""
        try:
            self._require_started("connect")
        except RuntimeError:
            await refuse(websocket)
            raise
        conn_id = self._reserve(id)
        try:
            if websocket.application_state is WebSocketState.CONNECTING:
                await websocket.accept(subprotocol=subprotocol, headers=headers)
            return self._register(websocket, conn_id, meta)
        finally:
            self._unreserve(conn_id)

    def _require_started(self, call: str) -> None:
        """Raise the error that names the fix when the manager's work needs it entered."""
        if self._running or not self._needs_start():
            return
        name = type(self).__name__
        raise RuntimeError(
            f"{name}.{call}() before the manager was started: enter it in the app's "
            "lifespan, 'async with manager:' around the lifespan's yield"
        )

    def _needs_start(self) -> bool:
        """Whether connections need the background tasks; subclasses with a backend do."""
        return self._heartbeat is not None or self._idle_timeout is not None

    def _register(self, websocket: Transport, conn_id: str, meta: dict[str, Any]) -> Connection:
        conn = Connection(
            websocket, id=conn_id, meta=meta, settings=self._settings, stats=self._stats,
            inline=self._use_inline(), on_asyncio=on_asyncio(), direct=self._direct_send,
        )  # fmt: skip
        self._add(conn)
        return conn

    async def _release(self, conn: Connection) -> None:
        """Unregister and, if the writer never got to, send the close frame (shielded)."""
        with anyio.CancelScope(shield=True):
            await self._on_release(conn)
            await conn.finish()
        self._remove(conn)

    async def _on_release(self, conn: Connection) -> None:
        """Called once per connection as it ends (shielded); subclasses clean up here."""

    def _use_inline(self) -> bool:
        if self._inline_send is None:
            self._inline_send = on_asyncio()
        return self._inline_send
