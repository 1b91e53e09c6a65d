"""The two servers ``bench.browser_client`` runs one page against (``BENCH_VARIANT``):

- ``asgi_rt``: a RoomManager room on the memory backend; the page's ``blast`` request
  publishes N numbered messages to its room (through the history, as every publication).
- ``socketio``: python-socketio's ``AsyncServer``; the page's ``blast`` event emits N
  messages to its room.

Both serve ``/`` (a blank page) and the client bundle the page loads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import socketio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket

from asgi_rt import RoomManager
from asgi_rt.connections.connection import Connection
from asgi_rt.messages import Router

from ._serve import app_for_variant

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = {
    "asgi_rt": ROOT / "clients/js/dist/index.js",
    "socketio": ROOT / "bench/js/node_modules/socket.io-client/dist/socket.io.esm.min.js",
}
QUEUE = 1_000_000  # room for a whole blast: the page, not a drop policy, sets the pace


def static(variant: str) -> list[Route]:
    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse('<!doctype html><meta charset="utf-8"><title>bench</title>')

    async def bundle(request: Request) -> FileResponse:
        return FileResponse(BUNDLES[variant], media_type="text/javascript")

    return [Route("/", page), Route("/client.js", bundle)]


def asgi_rt_app() -> ASGIApp:
    rooms = RoomManager(queue_size=QUEUE)
    router = Router()

    @router.on("blast")
    async def blast(conn: Connection, n: Any) -> Any:
        for i in range(int(n)):
            await rooms.publish("lobby", i)
        return int(n)

    async def socket(websocket: WebSocket) -> None:
        async with rooms.connect(websocket) as conn:
            await rooms.join(conn, "lobby", announce=True)
            await router.serve(conn)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with rooms:
            yield

    routes = [*static("asgi_rt"), WebSocketRoute("/ws/{room}", socket)]
    return Starlette(routes=routes, lifespan=lifespan)


def socketio_app() -> ASGIApp:
    sio = socketio.AsyncServer(async_mode="asgi", max_http_buffer_size=1 << 20)

    @sio.event
    async def connect(sid: str, environ: Any) -> None:
        await sio.enter_room(sid, "lobby")

    @sio.event
    async def blast(sid: str, n: Any) -> Any:
        for i in range(int(n)):
            await sio.emit("msg", i, room="lobby")
        return int(n)

    return socketio.ASGIApp(sio, other_asgi_app=Starlette(routes=static("socketio")))


def app() -> ASGIApp:
    return app_for_variant({"asgi_rt": asgi_rt_app, "socketio": socketio_app}, "asgi_rt")
