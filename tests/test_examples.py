"""The example apps, served by a real uvicorn (lifespan on) and used by real clients."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets
from starlette.types import ASGIApp

from ._server import RunningServer
from ._system import close_of

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
    """The next chat message, unwrapped from a room frame (``{"room", "seq", "data"}``)."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        message = frame["data"] if "data" in frame and "seq" in frame else frame
        if message["type"] == "message":
            return dict(message)


async def _next_frame(
    ws: websockets.ClientConnection, kind: str, user: str | None = None
) -> dict[str, Any]:
    """The next room frame whose data has type ``kind`` (and is about ``user``, if given)."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        data = frame.get("data") if "seq" in frame else None  # a room publication
        if not isinstance(data, dict) or data["type"] != kind:
            continue
        if user is None or data.get("member", {}).get("user") == user:
            return dict(frame)


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


async def test_fastapi_chat_shows_presence_and_numbers_messages(
    serve: Callable[..., RunningServer],
) -> None:
    server = serve(fastapi_example(), lifespan="on")
    async with await _join(f"{server.url}/ws/presence-room", "alice-token") as alice:
        position = json.loads(await alice.recv())
        assert (position["type"], position["seq"]) == ("joined", 0)  # an empty room
        here = json.loads(await alice.recv())
        assert here["type"] == "presence" and here["room"] == "presence-room"
        assert [m["user"] for m in here["members"]] == ["alice"]
        async with await _join(f"{server.url}/ws/presence-room", "bob-token") as bob:
            joined = await _next_frame(alice, "presence", "bob")  # after alice's own join
            assert joined["data"]["event"] == "join"
            await bob.send(json.dumps({"text": "hi"}))
            said = await _next_frame(alice, "message")
            assert said["room"] == "presence-room" and said["seq"] == joined["seq"] + 1
        left = await _next_frame(alice, "presence", "bob")
        assert left["data"]["event"] == "leave"


async def test_fastapi_chat_resumes_from_since_exactly_once(
    serve: Callable[..., RunningServer],
) -> None:
    server = serve(fastapi_example(), lifespan="on")
    url = f"{server.url}/ws/resume-room"
    async with await _join(url, "alice-token") as alice:
        await alice.send(json.dumps({"text": "before"}))
        last = await _next_frame(alice, "message")
    async with await _join(url, "bob-token") as bob:
        for text in ("missed 1", "missed 2"):
            await bob.send(json.dumps({"text": text}))
        resume = f"{url}?since={last['seq']}&epoch={last['epoch']}"  # what every frame carries
        async with await _join(resume, "alice-token") as alice:
            texts = [(await _next_message(alice))["text"] for _ in range(2)]
            await bob.send(json.dumps({"text": "live"}))
            texts.append((await _next_message(alice))["text"])
    assert texts == ["missed 1", "missed 2", "live"]  # "before" is not replayed


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/ws/no%20spaces", "invalid room name"),
        ("/ws/" + "x" * 33, "invalid room name"),
        ("/ws/lobby?since=soon", "invalid since"),
        ("/ws/lobby?since=-1", "invalid since"),
    ],
)
async def test_fastapi_chat_refuses_bad_rooms_and_resume_points_with_1008(
    serve: Callable[..., RunningServer], path: str, reason: str
) -> None:
    server = serve(fastapi_example(), lifespan="on")
    async with await _join(f"{server.url}{path}", "alice-token") as ws:
        code, text = await close_of(ws)
    assert code == 1008 and text.startswith(reason), (code, text)


async def test_fastapi_example_exports_metrics(serve: Callable[..., RunningServer]) -> None:
    server = serve(fastapi_example(), lifespan="on")
    async with await _join(f"{server.url}/ws/metrics-room", "alice-token") as alice:
        await alice.send(json.dumps({"text": "counted"}))
        await _next_message(alice)
    async with httpx.AsyncClient() as http:
        body = (await http.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)).text
    assert "asgi_rt_connections_total" in body and "asgi_rt_backplane_publish_seconds" in body


async def test_fastapi_example_labels_websockets_by_route_template(
    serve: Callable[..., RunningServer],
) -> None:
    server = serve(fastapi_example(), lifespan="on")
    async with await _join(f"{server.url}/ws/route-room", "alice-token") as alice:
        await alice.send(json.dumps({"text": "counted"}))
        await _next_message(alice)
    async with httpx.AsyncClient() as http:
        body = (await http.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)).text
    assert 'asgi_rt_connections_total{outcome="accepted",route="/ws/{room}"}' in body, body
    assert 'route="unknown"' not in body


async def test_starlette_example_labels_websockets_and_sse_by_route_template(
    serve: Callable[..., RunningServer],
) -> None:
    server = serve(starlette_example(), lifespan="on")
    base = f"http://127.0.0.1:{server.port}"
    async with await _join(f"{server.url}/ws/route-room", "alice-token") as alice:
        await alice.send(json.dumps({"text": "counted"}))
        await _next_message(alice)
    async with httpx.AsyncClient() as http:
        sse = {"accept": "text/event-stream"}  # what an EventSource sends
        url = f"{base}/events/dashboard"
        async with http.stream("GET", url, headers=sse, timeout=10) as stream:
            assert stream.status_code == 200  # the response started: the SSE is counted
        body = (await http.get(f"{base}/metrics", timeout=10)).text
    assert 'asgi_rt_connections_total{outcome="accepted",route="/ws/{room}"}' in body, body
    assert 'asgi_rt_connections_total{outcome="accepted",route="/events/dashboard"}' in body
    assert 'route="unknown"' not in body


async def test_a_refused_origin_is_logged_once_with_the_origin(
    serve: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(starlette_example(), lifespan="on")  # a fresh app: nothing refused yet
    with caplog.at_level(logging.WARNING, "asgi_rt.handshake"):
        for _ in range(3):  # a page reconnecting from the wrong port
            with pytest.raises(websockets.InvalidStatus):
                await websockets.connect(f"{server.url}/ws/lobby?token=x",
                                         origin="http://127.0.0.1:8100")  # type: ignore[arg-type]  # fmt: skip
    [line] = [r.getMessage() for r in caplog.records if r.name == "asgi_rt.handshake"]
    assert "origin not allowed" in line and "'http://127.0.0.1:8100'" in line, line
    assert "token" not in line
