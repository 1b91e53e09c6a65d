"""The app the browser client (clients/js) is tested against: ``uvicorn tests._client_app:app``,
or ``make_app(rooms)`` in process.

``/ws/{room}`` authenticates (tokens below; ``short-*`` tokens expire after
``SHORT_TOKEN_S``), joins the room (resuming after ``?since=&epoch=``, announcing its
position) and routes envelopes: ``say`` publishes its data to the room, ``echo`` answers
with its data, ``ask`` sends the client a ``question`` request and then the client's
answer as an ``answer`` frame; other types get an error frame. ``/mux`` joins rooms by
``join`` requests instead (``asgi_rt.rooms_protocol``). ``/events/{room}`` is the room as
SSE (from ``?since=&epoch=``, else ``Last-Event-ID``). ``/`` is a blank page that loads
the built bundle as ``window.AsgiRt``.

Environment for ``app``: ``ASGI_RT_TEST_BACKEND`` (the backplane), ``ASGI_RT_TEST_PING``
(seconds between app-level pings).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket

from asgi_rt import FirstMessageAuthMiddleware, RoomManager
from asgi_rt.connections.connection import Connection
from asgi_rt.connections.heartbeat import Heartbeat
from asgi_rt.exceptions import RequestFailed
from asgi_rt.messages import Router
from asgi_rt.middleware import Authenticated
from asgi_rt.rooms_protocol import room_handlers
from asgi_rt.sse import EventStreamResponse

BUNDLE = Path(__file__).resolve().parents[1] / "clients" / "js" / "dist" / "index.js"
SHORT_TOKEN_S = 2.0
PAGE = """<!doctype html><meta charset="utf-8"><title>asgi-rt-client test</title>
<script type="module">import * as AsgiRt from "/client.js"; window.AsgiRt = AsgiRt;</script>"""


async def authenticate(token: str) -> Any:
    if token.startswith("short-"):
        return Authenticated("shorty", expires_at=time.time() + SHORT_TOKEN_S)
    return {"alice-token": "alice", "bob-token": "bob"}.get(token)


def make_app(rooms: RoomManager) -> ASGIApp:
    async def room_socket(websocket: WebSocket) -> None:
        name = websocket.path_params["room"]
        since, epoch = websocket.query_params.get("since"), websocket.query_params.get("epoch")
        router = Router()

        @router.on("say")
        async def say(conn: Connection, data: Any) -> Any:
            await rooms.publish(name, data)
            return {"ok": True}

        @router.on("echo")
        async def echo(conn: Connection, data: Any) -> Any:
            return data

        async def question(conn: Connection, data: Any) -> None:
            try:
                answer = await conn.request("question", data, timeout=10)
            except RequestFailed as exc:
                answer = f"no answer: {exc}"
            await conn.send({"type": "answer", "data": answer})

        async with rooms.connect(websocket, user=websocket.scope["user"]) as conn:
            resume = int(since) if since else None
            await rooms.join(conn, name, since=resume, epoch=epoch, announce=True)
            async with anyio.create_task_group() as tg:

                @router.on("ask")  # the answer comes through serve(): ask in a task
                async def ask(conn: Connection, data: Any) -> Any:
                    tg.start_soon(question, conn, data)
                    return {"asked": True}

                await router.serve(conn)
                tg.cancel_scope.cancel()

    mux_router = Router()
    room_handlers(mux_router, rooms)

    async def mux_socket(websocket: WebSocket) -> None:
        async with rooms.connect(websocket, user=websocket.scope["user"]) as conn:
            await mux_router.serve(conn)

    async def events(request: Request) -> EventStreamResponse:
        since, epoch = request.query_params.get("since"), request.query_params.get("epoch")
        return EventStreamResponse(rooms, room=request.path_params["room"], heartbeat=5,
                                   since=int(since) if since else None, epoch=epoch)  # fmt: skip

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)

    async def bundle(request: Request) -> FileResponse:
        return FileResponse(BUNDLE, media_type="text/javascript")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with rooms:
            yield

    routes = [Route("/", page), Route("/client.js", bundle), Route("/events/{room}", events),
              WebSocketRoute("/ws/{room}", room_socket),
              WebSocketRoute("/mux", mux_socket)]  # fmt: skip
    inner = Starlette(routes=routes, lifespan=lifespan)
    return FirstMessageAuthMiddleware(inner, authenticate=authenticate)


_ping = os.environ.get("ASGI_RT_TEST_PING")
app = make_app(
    RoomManager(
        backend=os.environ.get("ASGI_RT_TEST_BACKEND", "memory://"),
        presence=True,
        heartbeat=None if _ping is None else Heartbeat(interval=float(_ping), timeout=30),
    )
)
