"""A tiny room chat on FastAPI: `make run` serves it on http://127.0.0.1:8000.

Each socket is checked at the handshake (Origin allowlist, connection limits), must then
authenticate with its first frame (demo tokens below), and joins the room in its path; a
message is fanned out to that room's members through the manager's bounded queues, so a
member on a bad phone line never stalls the room. Rooms across workers (Redis) arrive
with RoomManager; this uses one process.

ASGI_RT_ALLOWED_ORIGINS (comma-separated) overrides the allowed browser origins.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, WebSocket
from fastapi.responses import HTMLResponse

from asgi_rt import (
    ConnectionManager,
    FirstMessageAuthMiddleware,
    HandshakeMiddleware,
    Metrics,
    Overflow,
    RateLimit,
    TelemetryMiddleware,
    get_manager,
    metrics_app,
    provide,
)

PAGE = (Path(__file__).parent / "index.html").read_text()
DEMO_TOKENS = {"alice-token": "alice", "bob-token": "bob", "carol-token": "carol"}
ORIGINS = os.environ.get("ASGI_RT_ALLOWED_ORIGINS", "http://127.0.0.1:8000,http://localhost:8000")


async def verify_token(token: str) -> str | None:
    """Look the token up; a real app verifies a JWT or asks its session store."""
    return DEMO_TOKENS.get(token)


metrics = Metrics()  # the global prometheus_client registry; one Metrics per registry
manager = ConnectionManager(
    metrics=metrics,
    queue_size=256,
    overflow=Overflow.DISCONNECT,
    max_message_size=16 * 1024,
    rate_limit=RateLimit(per_second=20, burst=40),
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with manager:  # on shutdown: drain queues, close every socket with 1001
        yield


app = FastAPI(lifespan=lifespan)
provide(app, manager)
# add_middleware wraps: the last added is outermost. Handshake checks run first (cheap,
# before accept), then authentication; the route only ever sees authenticated sockets.
app.add_middleware(
    FirstMessageAuthMiddleware, authenticate=verify_token, timeout=5.0,
    on_failure=metrics.auth_failed,
)  # fmt: skip
app.add_middleware(
    HandshakeMiddleware,
    allowed_origins=ORIGINS.split(","),
    allow_missing_origin=True,  # non-browser clients; browsers always send Origin
    max_connections=10_000,
    max_connections_per_client=50,
    on_reject=metrics.handshake_rejected,
)
app.add_middleware(TelemetryMiddleware, metrics=metrics)  # outermost: sees rejections too
app.add_route("/metrics", metrics_app())


@app.get("/")
async def index() -> HTMLResponse:
    return HTMLResponse(PAGE)


@app.websocket("/ws/{room}")
async def chat(
    websocket: WebSocket, room: str, manager: ConnectionManager = Depends(get_manager)
) -> None:
    user = websocket.scope["user"]  # set by FirstMessageAuthMiddleware
    async with manager.connect(websocket, room=room, user=user) as conn:
        members = [c for c in manager if c.meta["room"] == room]
        await manager.broadcast({"type": "joined", "user": user}, to=members)
        async for message in conn.iter_json():
            text = str(message.get("text", ""))[:2000] if isinstance(message, dict) else ""
            members = [c for c in manager if c.meta["room"] == room]
            await manager.broadcast({"type": "message", "from": user, "text": text}, to=members)
