"""The room app the server tests run: ``uvicorn tests._rooms_app:app``, or ``make_app(rooms)``
in process.

``/ws/{room}`` joins the room (resuming after ``?since=&epoch=``, and announcing its position
with ``{"type": "joined", ...}``) and publishes every text frame it receives; ``/drop``
accepts and closes at once (1011); ``/close/{code}`` closes with ``code``.

For ``app``, the environment chooses: ``ASGI_RT_TEST_BACKEND`` the backplane (e.g.
``redis://127.0.0.1:PORT/0``), ``ASGI_RT_TEST_AUTH=1`` first-message auth (token ``good``),
``ASGI_RT_TEST_DRAIN_WINDOW`` (seconds) the drain on SIGTERM.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket

from asgi_rt import FirstMessageAuthMiddleware, RoomManager, drain_on_signal

TOKENS = {"good": "alice"}


async def authenticate(token: str) -> str | None:
    return TOKENS.get(token)


def make_app(
    rooms: RoomManager, seen: Counter[str] | None = None, *, auth: bool = True,
    drain_window: float | None = None,
) -> ASGIApp:  # fmt: skip
    """The app around ``rooms``; ``seen`` counts connections per path."""
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
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(rooms)
            if drain_window is not None:
                await stack.enter_async_context(drain_on_signal(rooms, window=drain_window))
            yield

    routes = [WebSocketRoute("/ws/{room}", room), WebSocketRoute("/drop", drop),
              WebSocketRoute("/close/{code}", close_with)]  # fmt: skip
    inner = Starlette(routes=routes, lifespan=lifespan)
    return FirstMessageAuthMiddleware(inner, authenticate=authenticate) if auth else inner


_window = os.environ.get("ASGI_RT_TEST_DRAIN_WINDOW")
app = make_app(
    RoomManager(backend=os.environ.get("ASGI_RT_TEST_BACKEND", "memory://")),
    auth=os.environ.get("ASGI_RT_TEST_AUTH") == "1",
    drain_window=None if _window is None else float(_window),
)
