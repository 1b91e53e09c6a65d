"""The app the security tests attack: first-message auth (cookie on SSE), authorized rooms.

Rooms: ``private-<user>`` only that user may join or stream; ``dashboard`` anyone
logged in may read, nobody may publish to from a client (the server does); ``boom``
has an authorize hook that raises. ``/ws/{room}`` joins and publishes each
``{"text": ...}`` it gets with ``publish_as``; a refusal is an error frame.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket

from asgi_rt import (
    EventStreamResponse,
    FirstMessageAuthMiddleware,
    Forbidden,
    Metrics,
    RoomManager,
)

TOKENS = {"alice-token": "alice", "mallory-token": "mallory"}


async def authenticate(token: str) -> str | None:
    return TOKENS.get(token)


async def authorize(user: Any, action: str, room: str) -> bool:
    if room == "boom":
        raise RuntimeError("policy store down")
    if room.startswith("private-"):
        return user is not None and room == f"private-{user}"
    if room == "dashboard":
        return action != "publish" and user is not None
    return user is not None


def make_app() -> tuple[ASGIApp, RoomManager, Metrics]:
    metrics = Metrics(CollectorRegistry())
    rooms = RoomManager(authorize=authorize, metrics=metrics)

    async def chat(websocket: WebSocket) -> None:
        room = websocket.path_params["room"]
        async with rooms.connect(websocket) as conn:
            try:
                await rooms.join(conn, room)
            except Forbidden as exc:
                await conn.send({"type": "error", "reason": exc.reason, "room": room})
                await conn.close(exc.code, exc.reason)
                return
            await conn.send({"type": "joined", "room": room})
            async for message in conn.iter_json():
                target = message.get("room", room)
                try:
                    await rooms.publish_as(conn, target, message["text"])
                except Forbidden as exc:
                    await conn.send({"type": "error", "reason": exc.reason, "room": target})

    async def events(request: Request) -> EventStreamResponse:
        return EventStreamResponse(rooms, room=request.path_params["room"], heartbeat=None)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with rooms:
            yield

    inner = Starlette(
        routes=[WebSocketRoute("/ws/{room}", chat), Route("/events/{room}", events)],
        lifespan=lifespan,
    )
    app = FirstMessageAuthMiddleware(inner, authenticate=authenticate, cookie="session",
                                     sse_paths=["/events/"])  # fmt: skip
    return app, rooms, metrics
