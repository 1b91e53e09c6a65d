"""The cross-worker rooms benchmark's server: one uvicorn worker, one variant.

Every variant serves:

* ``/ws``: receivers; each joins the room ``BENCH_ROOM`` (default ``"r"``) and is sent
  ``{"type":"joined"}`` once it is a member (for ``socketio_redis``: ``/socket.io/``,
  joined in the ``connect`` handler, so the CONNECT reply means the same);
* ``/pub``: one publisher whose every text frame is published to the room
  (for ``socketio_redis``: the ``"pub"`` event, emitted to the room as ``"msg"``);
* ``GET /stats``: JSON counters (members, manager stats, backplane listener state).

``BENCH_VARIANT``:

* ``asgi_rt_redis``: ``asgi_rt.RoomManager(backend=BENCH_REDIS_URL)``, entered in the
  app's lifespan; members get ``{"room":"r","seq":N,"data":"<published text>"}``;
* ``asgi_rt_memory``: the same app with ``backend="memory://"`` (one process only);
* ``asgi_rt_redis_cluster``: the same app on ``BENCH_CLUSTER_URL`` (``redis-cluster://``,
  run by ``bench.cluster``);
* ``asgi_rt_nats``: the same app with ``backend=BENCH_NATS_URL`` (NATS JetStream);
* ``socketio_redis``: python-socketio ``AsyncServer`` with
  ``socketio.AsyncRedisManager(BENCH_REDIS_URL)`` (the app of ``bench.fanout_server``);
* ``handrolled_redis`` (reference): what PERF-NOTES calls the hand-rolled listener: one
  ``redis.asyncio`` pub/sub listener per process feeding the naive local loop
  (``for ws in conns: await ws.send_text(text)``); the publisher ``PUBLISH``es the text
  as is. No seq, no history, no reconnects, no backpressure: the floor of a backplane.
* ``broadcaster_redis`` (peer): encode/broadcaster's ``Broadcast(BENCH_REDIS_URL)`` used as
  its README shows: every receiver runs ``async with broadcast.subscribe(room)`` and sends
  each event it yields (one unbounded queue and one task per receiver); the publisher
  ``broadcast.publish``es the text as is. broadcaster 0.3.1 loses receivers that subscribe
  concurrently (the first subscriber of a channel awaits the Redis SUBSCRIBE before it
  registers its queue, and a second one arriving meanwhile replaces the set): joins are
  serialised with a lock here so the peer is measured, not its race; and its listener
  exits for good if it wakes before the first SUBSCRIBE is recorded, so the app holds the
  room subscribed from startup plus a second subscription that re-arms it.

Run with ``python -m bench.rooms_server`` (prints one JSON line ``{"port", "stall_port",
"pid"}`` once listening; ``BENCH_WS`` picks uvicorn's WebSocket implementation, default
``websockets-sansio``, uvicorn's default), or ``uvicorn --factory bench.rooms_server:make_app``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket

from asgi_rt import RoomManager

from ._serve import app_for_variant, serve
from .fanout_server import Counters, _stats_route, manager_stats, socketio_app


def _rooms_app(
    receiver: Callable[[WebSocket], Awaitable[None]],
    publisher: Callable[[WebSocket], Awaitable[None]],
    stats: Callable[[], dict[str, Any]],
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]],
) -> Starlette:
    """What every variant serves: ``/ws``, ``/pub`` and ``/stats`` (module docstring)."""
    return Starlette(
        routes=[
            WebSocketRoute("/ws", receiver),
            WebSocketRoute("/pub", publisher),
            _stats_route(stats),
        ],
        lifespan=lifespan,
    )


async def _member(websocket: WebSocket, conns: set[WebSocket]) -> None:
    """A joined receiver of the peers' apps: in ``conns`` until it disconnects."""
    conns.add(websocket)
    await websocket.send_text('{"type":"joined"}')
    try:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
    finally:
        conns.discard(websocket)


def asgi_rt_rooms_app(backend: str, room: str) -> Starlette:
    rooms = RoomManager(backend=backend)
    counters = Counters()

    async def receiver(websocket: WebSocket) -> None:
        async with rooms.connect(websocket) as conn:
            await rooms.join(conn, room)
            await conn.send({"type": "joined"})
            async for _ in conn:
                pass

    publisher = counters.publisher(lambda text: rooms.publish(room, text))

    def stats() -> dict[str, Any]:
        backend = rooms.backend
        return {
            **manager_stats(rooms),
            "members": len(rooms.members(room)),
            "backend": type(backend).__name__,
            "listener_up": getattr(backend, "listener_up", None),
            "listener_reconnects": getattr(backend, "reconnects", None),
            **counters.as_dict(),
        }

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with rooms:
            yield

    return _rooms_app(receiver, publisher, stats, lifespan)


def socketio_redis_app(url: str) -> ASGIApp:
    import socketio  # type: ignore[import-untyped]

    return socketio_app(client_manager=socketio.AsyncRedisManager(url))


def handrolled_redis_app(url: str, room: str) -> Starlette:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    channel = f"bench:{room}"
    conns: set[WebSocket] = set()
    counters = Counters()
    subscribed = asyncio.Event()

    async def listen() -> None:
        pubsub = client.pubsub()
        await pubsub.subscribe(channel)
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
            if message is None:
                continue  # an idle read timeout is normal
            if message["type"] == "subscribe":
                subscribed.set()
            elif message["type"] == "message":
                text = message["data"].decode()
                for ws in list(conns):
                    try:
                        await ws.send_text(text)
                    except Exception:  # the peer left; its endpoint unregisters it
                        conns.discard(ws)

    async def receiver(websocket: WebSocket) -> None:
        await websocket.accept()
        await subscribed.wait()
        await _member(websocket, conns)

    publisher = counters.publisher(lambda text: client.publish(channel, text))

    def stats() -> dict[str, Any]:
        return {"connections": len(conns), "listener_up": subscribed.is_set(), **counters.as_dict()}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(listen())
        try:
            yield
        finally:
            task.cancel()
            await client.aclose()

    return _rooms_app(receiver, publisher, stats, lifespan)


def broadcaster_redis_app(url: str, room: str) -> Starlette:
    from broadcaster import Broadcast  # type: ignore[import-untyped,unused-ignore]

    broadcast = Broadcast(url)
    conns: set[WebSocket] = set()
    counters = Counters()

    join_lock = anyio.Lock()  # see the module docstring: broadcaster 0.3.1's subscribe race

    async def forward(websocket: WebSocket, joined: anyio.Event) -> None:
        async with AsyncExitStack() as stack:
            async with join_lock:
                subscriber = await stack.enter_async_context(broadcast.subscribe(room))
            joined.set()
            async for event in subscriber:
                await websocket.send_text(event.message)

    async def receiver(websocket: WebSocket) -> None:
        await websocket.accept()
        joined = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(forward, websocket, joined)
            await joined.wait()
            await _member(websocket, conns)
            tg.cancel_scope.cancel()

    publisher = counters.publisher(lambda text: broadcast.publish(room, text))

    def stats() -> dict[str, Any]:
        return {"connections": len(conns), **counters.as_dict()}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # broadcaster 0.3.1 on redis-py 7: its listener leaves if it wakes before the first
        # SUBSCRIBE is recorded and then waits for a readiness flag already spent; a second
        # subscription re-arms it (see the module docstring)
        async with broadcast, broadcast.subscribe(room), broadcast.subscribe(f"{room}:rearm"):
            yield

    return _rooms_app(receiver, publisher, stats, lifespan)


def make_app() -> ASGIApp:
    """The app named by ``BENCH_VARIANT`` (for ``uvicorn --factory``)."""
    url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    room = os.environ.get("BENCH_ROOM", "r")
    factories: dict[str, Callable[[], ASGIApp]] = {
        "asgi_rt_redis": lambda: asgi_rt_rooms_app(url, room),
        "asgi_rt_memory": lambda: asgi_rt_rooms_app("memory://", room),
        "asgi_rt_redis_cluster": lambda: asgi_rt_rooms_app(os.environ["BENCH_CLUSTER_URL"], room),
        "asgi_rt_nats": lambda: asgi_rt_rooms_app(os.environ["BENCH_NATS_URL"], room),
        "socketio_redis": lambda: socketio_redis_app(url),
        "handrolled_redis": lambda: handrolled_redis_app(url, room),
        "broadcaster_redis": lambda: broadcaster_redis_app(url, room),
    }
    return app_for_variant(factories, "asgi_rt_redis")


def main() -> None:
    serve(
        "bench.rooms_server:make_app",
        ws=os.environ.get("BENCH_WS", "websockets-sansio"),
        lifespan="on",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
