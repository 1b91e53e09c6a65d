"""A room app for the multi-worker tests: ``uvicorn tests._rooms_app:app`` with
``ASGI_RT_TEST_BACKEND`` naming the backplane (e.g. ``redis://127.0.0.1:PORT/0``) and
``ASGI_RT_TEST_DRAIN_WINDOW`` (seconds) turning on the drain on SIGTERM."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import RoomManager, drain_on_signal

rooms = RoomManager(backend=os.environ.get("ASGI_RT_TEST_BACKEND", "memory://"))


async def endpoint(websocket: WebSocket) -> None:
    room = websocket.path_params["room"]
    async with rooms.connect(websocket) as conn:
        await rooms.join(conn, room)
        await conn.send({"type": "joined"})
        async for text in conn.iter_text():
            await rooms.publish(room, text)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    window = os.environ.get("ASGI_RT_TEST_DRAIN_WINDOW")
    if window is None:
        async with rooms:
            yield
    else:
        async with rooms, drain_on_signal(rooms, window=float(window)):
            yield


app = Starlette(routes=[WebSocketRoute("/ws/{room}", endpoint)], lifespan=lifespan)
