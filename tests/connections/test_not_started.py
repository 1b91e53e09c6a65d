"""A RoomManager the app forgot to start (no ``async with rooms`` in the lifespan) fails at
the call with an error naming the fix, and the client is closed with a reason."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import websockets
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import FirstMessageAuthMiddleware, RoomManager

from .._poll import await_for
from .._server import RunningServer
from .._system import close_of

pytestmark = pytest.mark.anyio

FIX = "async with manager"


async def test_publish_on_a_manager_never_started_names_the_lifespan() -> None:
    rooms = RoomManager()
    with pytest.raises(RuntimeError, match="lifespan") as raised:
        await rooms.publish("lobby", {"text": "hi"})
    assert FIX in str(raised.value)


@pytest.mark.server
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the websockets client
async def test_client_of_a_manager_never_started_is_closed_1011_with_a_reason(
    serve: Callable[..., RunningServer],
) -> None:
    rooms = RoomManager()  # and no lifespan entering it: the mistake

    async def chat(websocket: WebSocket) -> None:
        async with rooms.connect(websocket) as conn:
            await rooms.join(conn, "lobby")

    async def verify(token: str) -> str | None:
        return "alice" if token == "alice-token" else None

    auth = Middleware(FirstMessageAuthMiddleware, authenticate=verify)
    app = Starlette(routes=[WebSocketRoute("/ws", chat)], middleware=[auth])
    server = serve(app)
    async with websockets.connect(f"{server.url}/ws") as ws:
        await ws.send(json.dumps({"type": "auth", "token": "alice-token"}))
        assert json.loads(await ws.recv()) == {"type": "auth_ok"}
        code, reason = await close_of(ws)
    assert (code, reason) == (1011, "server not started")

    def logged() -> bool:  # the error is raised (and logged) after the close frame went out
        return any(r.exc_info and FIX in str(r.exc_info[1]) for r in server.log.records)

    await await_for(logged, what="the RuntimeError naming the fix in uvicorn's log")
    server.log.records.clear()  # the one expected error: the fixture fails on any other
