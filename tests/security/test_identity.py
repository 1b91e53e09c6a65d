"""Attack: keep a socket alive, or change who it is, with somebody else's token."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import Authenticated, FirstMessageAuthMiddleware

from .._server import RunningServer
from .._system import close_of

pytestmark = [pytest.mark.anyio, pytest.mark.server]

# token -> principal; alice has two tokens (a refresh), mallory one
TOKENS = {"alice-1": "alice", "alice-2": "alice", "mallory-1": "mallory"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _app(**options: Any) -> FirstMessageAuthMiddleware:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(f"{websocket.scope['user']}:{text}")

    async def authenticate(token: str) -> Authenticated | None:
        user = TOKENS.get(token)
        return None if user is None else Authenticated(user, time.time() + 30)

    inner = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    return FirstMessageAuthMiddleware(inner, authenticate=authenticate, timeout=5.0, **options)


async def _auth(ws: websockets.ClientConnection, token: str, type_: str = "auth") -> None:
    await ws.send(json.dumps({"type": type_, "token": token}, ensure_ascii=False))


async def _logged_in(ws: websockets.ClientConnection, token: str) -> None:
    """Send an auth frame and expect ``auth_ok`` (a first login or an honest refresh)."""
    await _auth(ws, token)
    assert json.loads(await ws.recv()) == {"type": "auth_ok"}


async def test_refresh_with_another_principals_token_closes_1008(
    serve: Callable[..., RunningServer],
) -> None:
    server = serve(_app())
    async with websockets.connect(f"{server.url}/ws") as ws:
        await _logged_in(ws, "alice-1")
        await _auth(ws, "mallory-1")
        assert await close_of(ws) == (1008, "principal changed")


async def test_honest_refresh_with_the_same_principal_is_accepted(
    serve: Callable[..., RunningServer],
) -> None:
    server = serve(_app())
    async with websockets.connect(f"{server.url}/ws") as ws:
        await _logged_in(ws, "alice-1")
        await _logged_in(ws, "alice-2")
        await ws.send("hi")
        assert await ws.recv() == "alice:hi"


async def test_same_principal_hook_decides_and_a_raising_one_refuses(
    serve: Callable[..., RunningServer],
) -> None:
    def same_tenant(old: str, new: str) -> bool:
        if new == "mallory":
            raise RuntimeError("directory down")
        return old[0] == new[0]

    server = serve(_app(same_principal=same_tenant))
    async with websockets.connect(f"{server.url}/ws") as ws:
        await _logged_in(ws, "alice-1")
        await _auth(ws, "mallory-1")
        assert await close_of(ws) == (1008, "principal changed")


async def test_escaped_auth_type_is_a_refresh_never_handed_to_the_app(
    serve: Callable[..., RunningServer],
) -> None:
    server = serve(_app())
    async with websockets.connect(f"{server.url}/ws") as ws:
        await ws.send('{"type":"\\u0061uth","token":"alice-1"}')  # first frame
        assert json.loads(await ws.recv()) == {"type": "auth_ok"}
        await ws.send('{"type":"\\u0061uth","token":"mallory-1"}')  # refresh, same spelling
        assert await close_of(ws) == (1008, "principal changed")


async def test_malformed_refresh_frame_is_reported_as_malformed(
    serve: Callable[..., RunningServer],
) -> None:
    server = serve(_app())
    async with websockets.connect(f"{server.url}/ws") as ws:
        await _logged_in(ws, "alice-1")
        await ws.send('{"type":"auth","token":42}')
        assert await close_of(ws) == (1008, "auth malformed")
