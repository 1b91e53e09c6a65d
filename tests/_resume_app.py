"""A room app behind first-message auth that resumes from ``?since=``: what the resilient
client talks to. ``uvicorn tests._resume_app:app`` with ``ASGI_RT_TEST_BACKEND`` naming the
backplane; ``make_app(rooms)`` builds one around a given RoomManager in process."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket

from asgi_rt import FirstMessageAuthMiddleware, RoomManager

TOKENS = {"good": "alice"}


async def authenticate(token: str) -> str | None:
    return TOKENS.get(token)


def make_app(rooms: RoomManager, seen: Counter[str] | None = None) -> ASGIApp:
    """``/ws/{room}`` joins (resuming after ``since``) and publishes what it receives;
    ``/drop`` accepts and closes at once (1011), ``/close/{code}`` with ``code``; ``seen``
    counts connections per path."""
    counts = Counter[str]() if seen is None else seen

    async def room(websocket: WebSocket) -> None:
        counts[websocket.url.path] += 1
        since, epoch = websocket.query_params.get("since"), websocket.query_params.get("epoch")
        async with rooms.connect(websocket) as conn:
            room_name = websocket.path_params["room"]
            resume = int(since) if since else None
            await rooms.join(conn, room_name, since=resume, epoch=epoch, announce=True)
            async for text in conn.iter_text():
                await rooms.publish(room_name, text)

    async def drop(websocket: WebSocket) -> None:
        counts[websocket.url.path] += 1
        await websocket.accept()
        await websocket.close(1011, "broken")

    async def close_with(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close(int(websocket.path_params["code"]), "bye")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with rooms:
            yield

    routes = [WebSocketRoute("/ws/{room}", room), WebSocketRoute("/drop", drop),
              WebSocketRoute("/close/{code}", close_with)]  # fmt: skip
    inner = Starlette(routes=routes, lifespan=lifespan)
    return FirstMessageAuthMiddleware(inner, authenticate=authenticate, timeout=5.0)


app = make_app(RoomManager(backend=os.environ.get("ASGI_RT_TEST_BACKEND", "memory://")))
