"""The example apps under attack: other users' private rooms, the server-only dashboard."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from starlette.types import ASGIApp

from .._server import RunningServer
from .._system import close_of
from ..test_examples import fastapi_example, starlette_example

pytestmark = [pytest.mark.anyio, pytest.mark.server]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _login(url: str, token: str) -> websockets.ClientConnection:
    ws = await websockets.connect(url)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    assert json.loads(await ws.recv()) == {"type": "auth_ok"}
    return ws


async def _next(ws: websockets.ClientConnection, kind: str) -> dict[str, Any]:
    """The next frame of ``type`` ``kind`` (a room publication's data counts by its type)."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        data = frame.get("data") if "seq" in frame else frame
        if isinstance(data, dict) and data.get("type") == kind:
            return dict(data)


@pytest.mark.parametrize("make_app", [fastapi_example, starlette_example])
async def test_only_alice_joins_her_private_room(
    serve: Callable[..., RunningServer], make_app: Callable[[], ASGIApp]
) -> None:
    server = serve(make_app(), lifespan="on")
    async with await _login(f"{server.url}/ws/private-alice", "bob-token") as bob:
        assert await _next(bob, "error") == {
            "type": "error", "reason": "forbidden", "room": "private-alice"
        }  # fmt: skip
        assert await close_of(bob) == (1008, "forbidden")
    async with await _login(f"{server.url}/ws/private-alice", "alice-token") as alice:
        await alice.send(json.dumps({"text": "note to self"}))
        assert (await _next(alice, "message"))["text"] == "note to self"


@pytest.mark.parametrize("make_app", [fastapi_example, starlette_example])
async def test_clients_cannot_publish_into_the_dashboard_room(
    serve: Callable[..., RunningServer], make_app: Callable[[], ASGIApp]
) -> None:
    server = serve(make_app(), lifespan="on")
    async with await _login(f"{server.url}/ws/dashboard", "alice-token") as alice:
        await alice.send(json.dumps({"text": "fake numbers"}))
        assert await _next(alice, "error") == {
            "type": "error", "reason": "forbidden", "room": "dashboard"
        }  # fmt: skip
        await alice.send(json.dumps({"text": "still here"}))  # the socket stays open
        assert (await _next(alice, "error"))["room"] == "dashboard"
