"""Attacks on rooms and streams: join, publish into or read a room one may not."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import httpx
import pytest
import websockets

from .._server import RunningServer
from .._sseclient import events, next_data_event, sse_headers
from .._system import close_of
from ._secure_app import make_app

pytestmark = [pytest.mark.anyio, pytest.mark.server]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _login(server: RunningServer, path: str, token: str) -> websockets.ClientConnection:
    ws = await websockets.connect(f"{server.url}{path}")
    await ws.send(json.dumps({"type": "auth", "token": token}))
    assert json.loads(await ws.recv()) == {"type": "auth_ok"}
    return ws


async def test_joining_another_users_private_room_is_forbidden(
    serve: Callable[..., RunningServer],
) -> None:
    app, _, metrics = make_app()
    server = serve(app, lifespan="on")
    async with await _login(server, "/ws/private-alice", "mallory-token") as mallory:
        error = {"type": "error", "reason": "forbidden", "room": "private-alice"}
        assert json.loads(await mallory.recv()) == error
        assert await close_of(mallory) == (1008, "forbidden")
    async with await _login(server, "/ws/private-alice", "alice-token") as alice:
        assert json.loads(await alice.recv()) == {"type": "joined", "room": "private-alice"}
    denials = metrics.registry.get_sample_value(
        "asgi_rt_authorization_denials_total", {"action": "join"}
    )
    assert denials == 1


async def test_a_client_cannot_publish_into_the_server_only_room(
    serve: Callable[..., RunningServer],
) -> None:
    app, rooms, _ = make_app()
    server = serve(app, lifespan="on")
    async with await _login(server, "/ws/dashboard", "alice-token") as ws:
        assert json.loads(await ws.recv()) == {"type": "joined", "room": "dashboard"}
        await ws.send(json.dumps({"text": "fake numbers"}))
        assert json.loads(await ws.recv()) == {
            "type": "error", "reason": "forbidden", "room": "dashboard"
        }  # fmt: skip
        await server.acall(lambda: rooms.publish("dashboard", "real numbers"))
        assert json.loads(await ws.recv())["data"] == "real numbers"


async def test_sse_without_credentials_or_with_the_wrong_user_is_refused_before_any_event(
    serve: Callable[..., RunningServer],
) -> None:
    app, rooms, _ = make_app()
    server = serve(app, lifespan="on")
    url = f"http://127.0.0.1:{server.port}/events/private-alice"
    async with httpx.AsyncClient(timeout=10) as client:
        anonymous = await client.get(url, headers=sse_headers())
        bad_token = await client.get(url, headers=sse_headers(cookie="session=stolen"))
        mallory = await client.get(url, headers=sse_headers(cookie="session=mallory-token"))
        resume = await client.get(url, headers=sse_headers("e:0", cookie="session=mallory-token"))
        assert (anonymous.status_code, anonymous.text) == (401, "authentication required")
        assert (bad_token.status_code, bad_token.text) == (401, "authentication failed")
        assert (mallory.status_code, mallory.text) == (403, "forbidden")
        assert (resume.status_code, resume.text) == (403, "forbidden")
        alice = sse_headers(cookie="session=alice-token")
        async with client.stream("GET", url, headers=alice) as resp:
            assert resp.status_code == 200
            stream = events(resp)
            await server.acall(lambda: rooms.publish("private-alice", "for alice"))
            assert json.loads((await next_data_event(stream)).data)["data"] == "for alice"


async def test_a_raising_authorize_hook_denies_and_is_logged(
    serve: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    app, _, _ = make_app()
    server = serve(app, lifespan="on")
    with caplog.at_level(logging.ERROR, logger="asgi_rt.rooms"):
        async with await _login(server, "/ws/boom", "alice-token") as ws:
            assert json.loads(await ws.recv())["reason"] == "forbidden"
            assert await close_of(ws) == (1008, "forbidden")
    assert "authorize raised for join on room 'boom'" in caplog.text
