"""A tiny room chat on FastAPI: `make run` serves it on http://127.0.0.1:8000.

Each socket joins the room in its path; a message is fanned out to that room's members
through the manager's bounded queues, so a member on a bad phone line never stalls the
room. Rooms across workers (Redis) arrive with RoomManager; this uses one process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, WebSocket
from fastapi.responses import HTMLResponse

from asgi_rt import ConnectionManager, Overflow, RateLimit, get_manager, provide

PAGE = (Path(__file__).parent / "index.html").read_text()

manager = ConnectionManager(
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


@app.get("/")
async def index() -> HTMLResponse:
    return HTMLResponse(PAGE)


@app.websocket("/ws/{room}")
async def chat(
    websocket: WebSocket, room: str, manager: ConnectionManager = Depends(get_manager)
) -> None:
    async with manager.connect(websocket, room=room) as conn:
        members = [c for c in manager if c.meta.get("room") == room]
        await manager.broadcast({"type": "joined", "id": conn.id[:6]}, to=members)
        async for message in conn.iter_json():
            text = str(message.get("text", ""))[:2000] if isinstance(message, dict) else ""
            members = [c for c in manager if c.meta.get("room") == room]
            await manager.broadcast({"type": "message", "from": conn.id[:6], "text": text},
                                    to=members)  # fmt: skip
