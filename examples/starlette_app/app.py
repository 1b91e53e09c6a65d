"""The same room chat in plain Starlette (no dependency injection framework), with the
same handshake checks and first-message authentication.

Run: `.venv/bin/uvicorn examples.starlette_app.app:app --port 8001`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import HTMLResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import (
    ConnectionManager,
    FirstMessageAuthMiddleware,
    HandshakeMiddleware,
    get_manager,
    provide,
)

PAGE = (Path(__file__).parent.parent / "fastapi_app" / "index.html").read_text()
DEMO_TOKENS = {"alice-token": "alice", "bob-token": "bob", "carol-token": "carol"}


async def verify_token(token: str) -> str | None:
    return DEMO_TOKENS.get(token)


async def index(request: object) -> HTMLResponse:
    return HTMLResponse(PAGE)


async def chat(websocket: WebSocket) -> None:
    manager = get_manager(websocket)
    room, user = websocket.path_params["room"], websocket.scope["user"]
    async with manager.connect(websocket, room=room) as conn:
        async for message in conn.iter_json():
            text = str(message.get("text", ""))[:2000] if isinstance(message, dict) else ""
            members = [c for c in manager if c.meta["room"] == room]
            await manager.broadcast({"type": "message", "from": user, "text": text}, to=members)


def create_app() -> Starlette:
    manager = ConnectionManager()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with manager:
            yield

    # Middleware(...) lists run outermost first: handshake checks, then authentication.
    middleware = [
        Middleware(
            HandshakeMiddleware,
            allowed_origins=["http://127.0.0.1:8001"],
            allow_missing_origin=True,
        ),
        Middleware(FirstMessageAuthMiddleware, authenticate=verify_token),
    ]
    app = Starlette(
        routes=[Route("/", index), WebSocketRoute("/ws/{room}", chat)],
        middleware=middleware,
        lifespan=lifespan,
    )
    provide(app, manager)
    return app


app = create_app()
