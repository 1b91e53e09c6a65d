"""The fan-out benchmark's server: one ASGI app per variant, run by uvicorn.

Every app serves:

* ``/ws``: receivers (for ``socketio``: ``/socket.io/``, receivers join room ``"r"``);
* ``/pub``: one publisher whose every text frame is broadcast to all receivers
  (for ``socketio``: the ``"pub"`` event, emitted to room ``"r"`` as ``"msg"``);
* ``GET /stats``: JSON counters (``?gc=1`` runs ``gc.collect()`` first).

Select the app with ``BENCH_VARIANT`` and run it with ``python -m bench.fanout_server``
(prints one JSON line ``{"port", "stall_port", "pid"}`` once listening, see
``bench._serve``), or with the CLI:
``BENCH_VARIANT=naive uvicorn --factory bench.fanout_server:make_app``.

``BENCH_WS`` picks uvicorn's WebSocket implementation (default ``websockets-sansio``);
``BENCH_WS_DEFLATE=0`` runs it as ``--ws-per-message-deflate false``.
``BENCH_SNDBUF=<bytes>`` opens a second listener (``stall_port``) whose ``SO_SNDBUF`` is
set to that size; accepted sockets inherit it, so a peer connecting there that stops
reading blocks the server's sends after a few KiB instead of MiBs. Healthy peers use
the normal listener, so they are identical with and without a stalled peer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket, WebSocketDisconnect

from asgi_rt import ConnectionManager

from ._serve import app_for_variant, serve

StatsFn = Callable[[], dict[str, Any]]


class Counters:
    """Broadcasts the server started and finished: a stalled publisher shows a gap."""

    def __init__(self) -> None:
        self.started = 0
        self.done = 0

    def as_dict(self) -> dict[str, Any]:
        return {"broadcasts_started": self.started, "broadcasts_done": self.done}

    def publisher(
        self, publish: Callable[[str], Awaitable[object]]
    ) -> Callable[[WebSocket], Awaitable[None]]:
        """The ``/pub`` endpoint: every text frame is published, counted before and after."""

        async def endpoint(websocket: WebSocket) -> None:
            await websocket.accept()
            async for text in websocket.iter_text():
                self.started += 1
                await publish(text)
                self.done += 1

        return endpoint


def _stats_route(stats: StatsFn) -> Route:
    async def endpoint(request: Request) -> JSONResponse:
        if request.query_params.get("gc"):
            gc.collect()
        return JSONResponse(stats())

    return Route("/stats", endpoint)


def manager_stats(manager: ConnectionManager) -> dict[str, Any]:
    """An asgi_rt manager's connections, the longest queue, who is closing, its counters."""
    conns = list(manager)
    return {
        "connections": len(manager),
        "max_queued": max((c.queued for c in conns), default=0),
        "closing": [[c.close_code, c.close_reason] for c in conns if c.state != "open"],
        "manager": dataclasses.asdict(manager.stats()),
    }


# asgi_rt ---------------------------------------------------------------------------------


def asgi_rt_app(*, inline_send: bool | None = None, direct_send: bool = False) -> Starlette:
    manager = ConnectionManager(inline_send=inline_send, direct_send=direct_send)
    counters = Counters()

    async def receiver(websocket: WebSocket) -> None:
        async with manager.connect(websocket) as conn:
            async for _ in conn:
                pass

    publisher = counters.publisher(manager.broadcast)

    def stats() -> dict[str, Any]:
        return {**manager_stats(manager), **counters.as_dict()}

    return Starlette(
        routes=[
            WebSocketRoute("/ws", receiver),
            WebSocketRoute("/pub", publisher),
            _stats_route(stats),
        ]
    )


# asgi_rt_stack: the same app behind the production middleware -----------------------------


def _browser_headers(app: ASGIApp) -> ASGIApp:
    """Add the Origin and bearer token a browser client would send (the raw bench client
    sends neither); touches the handshake's scope only, never receive or send."""
    extra = [(b"origin", b"https://app.example.com"), (b"authorization", b"Bearer bench")]

    async def with_headers(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope = {**scope, "headers": [*scope["headers"], *extra]}
        await app(scope, receive, send)

    return with_headers


STACK = ("telemetry", "handshake", "auth")


def asgi_rt_stack_app(layers: tuple[str, ...] = STACK, *, direct_send: bool = False) -> ASGIApp:
    """``asgi_rt`` behind Telemetry (1 % frame spans, no exporter), Handshake and
    FirstMessageAuth (token from the handshake header, so each socket gets ``auth_ok``
    first, which the bench client skips), as ``DESIGN.md``'s example stacks them;
    ``layers`` picks some of them (``asgi_rt_stack_<layer>`` variants: one layer's cost);
    ``direct_send`` is the manager option (``asgi_rt_stack_direct``)."""
    from opentelemetry.sdk.trace import TracerProvider
    from prometheus_client import CollectorRegistry

    from asgi_rt import FirstMessageAuthMiddleware, HandshakeMiddleware, TelemetryMiddleware

    async def authenticate(token: str) -> str | None:
        return "bench" if token == "bench" else None

    app: ASGIApp = asgi_rt_app(direct_send=direct_send)
    if "auth" in layers:
        app = FirstMessageAuthMiddleware(app, authenticate=authenticate, header=True)
    if "handshake" in layers:
        app = HandshakeMiddleware(app, allowed_origins=["https://app.example.com"])
    if "telemetry" in layers:
        app = TelemetryMiddleware(
            app,
            registry=CollectorRegistry(),
            tracer_provider=TracerProvider(),
            frame_sample_ratio=0.01,
        )
    return _browser_headers(app)


# naive: the ConnectionManager from the FastAPI docs ---------------------------------------


def naive_app() -> ASGIApp:
    from fastapi import FastAPI

    class DocsConnectionManager:
        def __init__(self) -> None:
            self.active_connections: list[WebSocket] = []

        async def connect(self, websocket: WebSocket) -> None:
            await websocket.accept()
            self.active_connections.append(websocket)

        def disconnect(self, websocket: WebSocket) -> None:
            self.active_connections.remove(websocket)

        async def broadcast(self, message: str) -> None:
            for connection in self.active_connections:
                await connection.send_text(message)

    manager = DocsConnectionManager()
    counters = Counters()
    app = FastAPI()

    @app.websocket("/ws")
    async def receiver(websocket: WebSocket) -> None:
        await manager.connect(websocket)
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            manager.disconnect(websocket)

    @app.websocket("/pub")
    async def publisher(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                data = await websocket.receive_text()
                counters.started += 1
                await manager.broadcast(data)
                counters.done += 1
        except WebSocketDisconnect:
            pass

    @app.get("/stats")
    async def stats(request: Request) -> dict[str, Any]:
        if request.query_params.get("gc"):
            gc.collect()
        return {"connections": len(manager.active_connections), **counters.as_dict()}

    return app


# queue_writer: a bounded asyncio.Queue and a writer task per client -----------------------


def queue_writer_app() -> Starlette:
    clients: dict[WebSocket, tuple[asyncio.Queue[str], asyncio.Task[None]]] = {}
    counters = Counters()
    overflow = {"closed": 0}
    background: set[asyncio.Task[None]] = set()

    async def writer(websocket: WebSocket, queue: asyncio.Queue[str]) -> None:
        try:
            while True:
                await websocket.send_text(await queue.get())
        except Exception:  # the peer left; the receive loop unregisters it
            return

    async def close_slow(websocket: WebSocket) -> None:
        try:
            async with asyncio.timeout(2):
                await websocket.close(1013, "slow consumer")
        except Exception:
            return

    def broadcast(text: str) -> None:
        for websocket, (queue, task) in list(clients.items()):
            try:
                queue.put_nowait(text)
            except asyncio.QueueFull:
                del clients[websocket]
                task.cancel()
                overflow["closed"] += 1
                closer = asyncio.create_task(close_slow(websocket))
                background.add(closer)
                closer.add_done_callback(background.discard)

    async def receiver(websocket: WebSocket) -> None:
        await websocket.accept()
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=256)
        task = asyncio.create_task(writer(websocket, queue))
        clients[websocket] = (queue, task)
        try:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        finally:
            clients.pop(websocket, None)
            task.cancel()

    async def publish(text: str) -> None:
        broadcast(text)

    publisher = counters.publisher(publish)

    def stats() -> dict[str, Any]:
        return {
            "connections": len(clients),
            "max_queued": max((q.qsize() for q, _ in clients.values()), default=0),
            "overflow_closes": overflow["closed"],
            **counters.as_dict(),
        }

    return Starlette(
        routes=[
            WebSocketRoute("/ws", receiver),
            WebSocketRoute("/pub", publisher),
            _stats_route(stats),
        ]
    )


# socketio: python-socketio rooms -------------------------------------------------------------


def socketio_app(client_manager: Any = None) -> ASGIApp:
    """``client_manager``: e.g. ``socketio.AsyncRedisManager(url)`` for several workers."""
    import socketio  # type: ignore[import-untyped]

    sio = socketio.AsyncServer(
        async_mode="asgi", client_manager=client_manager, logger=False, engineio_logger=False
    )
    counters = Counters()
    members: set[str] = set()

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if not auth:  # the publisher connects with auth {"pub": 1} and joins no room
            await sio.enter_room(sid, "r")
            members.add(sid)

    @sio.event  # type: ignore[untyped-decorator]
    async def disconnect(sid: str, *args: Any) -> None:
        members.discard(sid)

    @sio.on("pub")  # type: ignore[untyped-decorator]
    async def pub(sid: str, data: str) -> None:
        counters.started += 1
        await sio.emit("msg", data, room="r")
        counters.done += 1

    def stats() -> dict[str, Any]:
        return {"connections": len(members), **counters.as_dict()}

    other = Starlette(routes=[_stats_route(stats)])
    app: ASGIApp = socketio.ASGIApp(sio, other_asgi_app=other)
    return app


# bare: accept and read, nothing else (the memory floor) -----------------------------------


def bare_app() -> Starlette:
    """Plus the naive loop on ``/pub``, so a memory run can send each receiver a message."""
    receivers: set[WebSocket] = set()

    async def receiver(websocket: WebSocket) -> None:
        await websocket.accept()
        receivers.add(websocket)
        try:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        finally:
            receivers.discard(websocket)

    async def publish(text: str) -> None:
        for websocket in list(receivers):
            await websocket.send_text(text)

    publisher = Counters().publisher(publish)
    return Starlette(
        routes=[
            WebSocketRoute("/ws", receiver),
            WebSocketRoute("/pub", publisher),
            _stats_route(lambda: {"connections": len(receivers)}),
        ]
    )


def make_app() -> ASGIApp:
    """The app named by ``BENCH_VARIANT`` (for ``uvicorn --factory``)."""
    factories: dict[str, Callable[[], ASGIApp]] = {
        "asgi_rt": asgi_rt_app,
        "asgi_rt_task": lambda: asgi_rt_app(inline_send=False),
        "asgi_rt_stack": asgi_rt_stack_app,
        "asgi_rt_stack_direct": partial(asgi_rt_stack_app, direct_send=True),
        **{f"asgi_rt_stack_{layer}": partial(asgi_rt_stack_app, (layer,)) for layer in STACK},
        "naive": naive_app,
        "queue_writer": queue_writer_app,
        "socketio": socketio_app,
        "bare": bare_app,
    }
    return app_for_variant(factories, "asgi_rt")


def main() -> None:
    serve(
        "bench.fanout_server:make_app",
        stall_listener=True,
        ws=os.environ.get("BENCH_WS", "websockets-sansio"),
        ws_per_message_deflate=os.environ.get("BENCH_WS_DEFLATE", "1") != "0",
        lifespan="off",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
