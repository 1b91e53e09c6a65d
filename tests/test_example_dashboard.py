"""The Starlette example's SSE dashboard, on a real uvicorn: the counters arrive as
events of the same RoomManager that carries the chat sockets."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import httpx
import pytest
import websockets
from examples.starlette_app.app import create_app

from ._server import RunningServer
from ._sseclient import events, next_data_event, sse_headers

pytestmark = [pytest.mark.anyio, pytest.mark.server]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_dashboard_streams_this_workers_counters(
    serve: Callable[..., RunningServer],
) -> None:
    server = serve(create_app("memory://"), lifespan="on")
    base = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(timeout=10) as client:
        page = await client.get(f"{base}/dashboard")
        assert "EventSource" in page.text
        async with (
            client.stream("GET", f"{base}/events/dashboard", headers=sse_headers()) as resp,
            websockets.connect(f"{server.url}/ws/lobby") as ws,
        ):
            await ws.send(json.dumps({"type": "auth", "token": "alice-token"}))
            assert json.loads(await ws.recv()) == {"type": "auth_ok"}
            stream = events(resp)
            frame = json.loads((await next_data_event(stream)).data)
            # presence events come first; then counters, once the chat socket is counted
            while frame.get("data", {}).get("connections", 0) < 2:
                frame = json.loads((await next_data_event(stream)).data)
    assert frame["room"] == "dashboard"
    assert frame["data"]["worker"] == os.getpid()  # uvicorn runs in this process here
    assert frame["data"]["connections"] == 2 and frame["data"]["rooms"] == 2
