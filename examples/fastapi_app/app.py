"""A multi-room chat on FastAPI: `make run` serves it on http://127.0.0.1:8000.

Each socket is checked at the handshake (Origin allowlist, connection limits), must then
authenticate with its first frame (demo tokens in examples/chat.py), and joins the room in
its path. A message goes through the RoomManager's backplane to every member of the room, on every
worker, through bounded per-connection queues, so a member on a bad phone line never
stalls the room. A page that reconnects passes the last ``seq`` it saw (``?since=``) and
gets what it missed, in order and once, before live messages.

Environment:
    ASGI_RT_BACKEND: the backplane, ``memory://`` (default: one process, history lost on
        restart) or ``redis://host:port/db`` (every worker; needs the ``redis`` package).
    HOST, PORT: where the page is served (``make run`` passes them); the sockets' Origin
        allowlist is that page's origin (``http://127.0.0.1:PORT``, ``http://localhost:PORT``).
    ASGI_RT_ALLOWED_ORIGINS: comma-separated browser origins instead (e.g. behind a proxy).
    ASGI_RT_PROXY_HOPS, ASGI_RT_MAX_PER_CLIENT: see ``examples.chat.proxy_options``.

The chat protocol (frames, close codes) is in ``examples/chat.py``, shared with the
Starlette example.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, WebSocket
from fastapi.responses import HTMLResponse

from asgi_rt import (
    FirstMessageAuthMiddleware,
    HandshakeMiddleware,
    Metrics,
    Overflow,
    RateLimit,
    RoomManager,
    TelemetryMiddleware,
    drain_on_signal,
    get_rooms,
    metrics_app,
    provide,
)
from examples.chat import allowed_origins, authorize, chat_session, proxy_options, verify_token
from examples.client_bundle import client_bundle

PAGE = (Path(__file__).parent / "index.html").read_text()
BACKEND = os.environ.get("ASGI_RT_BACKEND", "memory://")
ORIGINS = allowed_origins(default_port=8000)


metrics = Metrics()  # the global prometheus_client registry; one Metrics per registry
rooms = RoomManager(
    backend=BACKEND,
    presence=True,
    authorize=authorize,  # private-<user> rooms, a read-only dashboard (examples/chat.py)
    metrics=metrics,
    queue_size=256,
    overflow=Overflow.DISCONNECT,
    max_message_size=16 * 1024,
    rate_limit=RateLimit(per_second=20, burst=40),
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # starts the backplane; on SIGTERM closes the sockets spread over 5 s (1012), so that
    # the pages' jittered reconnects do not all land in the same second
    async with rooms, drain_on_signal(rooms, window=5.0):
        yield


app = FastAPI(lifespan=lifespan)
provide(app, rooms, name="rooms")  # what get_rooms reads
# add_middleware wraps: the last added is outermost. Handshake checks run first (cheap,
# before accept), then authentication; the route only ever sees authenticated sockets.
app.add_middleware(
    FirstMessageAuthMiddleware, authenticate=verify_token, timeout=5.0,
    on_failure=metrics.auth_failed,
)  # fmt: skip
app.add_middleware(
    HandshakeMiddleware,
    allowed_origins=ORIGINS,
    allow_missing_origin=True,  # non-browser clients; browsers always send Origin
    max_connections=10_000,
    on_reject=metrics.handshake_rejected,
    **proxy_options(),  # per-client limit; behind a proxy, counted by X-Forwarded-For
)
app.add_middleware(TelemetryMiddleware, metrics=metrics)  # outermost: sees rejections too
app.add_route("/metrics", metrics_app())
app.add_route("/asgi-rt-client.js", client_bundle)  # the page's client (clients/js)


@app.get("/")
async def index() -> HTMLResponse:
    return HTMLResponse(PAGE)


@app.websocket("/ws/{room}")
async def chat(websocket: WebSocket, room: str, rooms: RoomManager = Depends(get_rooms)) -> None:
    await chat_session(rooms, websocket, room)
