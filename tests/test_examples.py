"""The example apps, served by a real uvicorn (lifespan on) and used by real clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest
import websockets
from starlette.types import ASGIApp

from ._server import RunningServer

pytestmark = [pytest.mark.anyio, pytest.mark.server]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def fastapi_example() -> ASGIApp:
    from examples.fastapi_app.app import app

    return app


def starlette_example() -> ASGIApp:
    from examples.starlette_app.app import create_app

    return create_app()


async def _join(url: str, token: str) -> websockets.ClientConnection:
    ws = await websockets.connect(url)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    assert json.loads(await ws.recv()) == {"type": "auth_ok"}
    return ws


async def _next_message(ws: websockets.ClientConnection) -> dict[str, str]:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message["type"] == "message":
            return dict(message)


@pytest.mark.parametrize("make_app", [fastapi_example, starlette_example])
async def test_chat_reaches_the_room_and_only_the_room(
    serve: Callable[..., RunningServer], make_app: Callable[[], ASGIApp]
) -> None:
    server = serve(make_app(), lifespan="on")
    async with httpx.AsyncClient() as http:
        page = (await http.get(f"http://127.0.0.1:{server.port}/", timeout=10)).content
    assert b"<title>asgi_rt chat</title>" in page
    async with (
        await _join(f"{server.url}/ws/lobby", "alice-token") as alice,
        await _join(f"{server.url}/ws/lobby", "bob-token") as bob,
        await _join(f"{server.url}/ws/elsewhere", "carol-token") as carol,
    ):
        await alice.send(json.dumps({"text": "hi bob"}))
        assert await _next_message(bob) == {"type": "message", "from": "alice", "text": "hi bob"}
        assert (await _next_message(alice))["text"] == "hi bob"
        await carol.send(json.dumps({"text": "only me"}))
        assert (await _next_message(carol))["text"] == "only me"
        await alice.send(json.dumps({"text": "second"}))
        assert (await _next_message(bob))["text"] == "second"  # carol's never reached bob


@pytest.mark.parametrize("make_app", [fastapi_example, starlette_example])
async def test_examples_refuse_foreign_origins_and_bad_tokens(
    serve: Callable[..., RunningServer], make_app: Callable[[], ASGIApp]
) -> None:
    server = serve(make_app(), lifespan="on")
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(f"{server.url}/ws/lobby", origin="https://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    async with websockets.connect(f"{server.url}/ws/lobby") as ws:
        await ws.send(json.dumps({"type": "auth", "token": "stolen"}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
