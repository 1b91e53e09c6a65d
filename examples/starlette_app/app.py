"""The same room chat in plain Starlette (no dependency injection framework).

Run: `.venv/bin/uvicorn examples.starlette_app.app:app --port 8001`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import ConnectionManager, get_manager, provide

PAGE = (Path(__file__).parent.parent / "fastapi_app" / "index.html").read_text()


async def index(request: object) -> HTMLResponse:
    return HTMLResponse(PAGE)


async def chat(websocket: WebSocket) -> None:
    manager = get_manager(websocket)
    room = websocket.path_params["room"]
    async with manager.connect(websocket, room=room) as conn:
        async for message in conn.iter_json():
            text = str(message.get("text", ""))[:2000] if isinstance(message, dict) else ""
            members = [c for c in manager if c.meta.get("room") == room]
            await manager.broadcast({"type": "message", "from": conn.id[:6], "text": text},
                                    to=members)  # fmt: skip


def create_app() -> Starlette:
    manager = ConnectionManager()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with manager:
            yield

    app = Starlette(
        routes=[Route("/", index), WebSocketRoute("/ws/{room}", chat)], lifespan=lifespan
    )
    provide(app, manager)
    return app


app = create_app()
