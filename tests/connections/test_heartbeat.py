"""App-level heartbeat and idle timeout, in process under asyncio and trio."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry

from asgi_rt import ConnectionManager, Heartbeat, Metrics
from asgi_rt.testing import websocket_session

from ..apps import echo_app

pytestmark = pytest.mark.anyio


async def test_pings_are_answered_and_pongs_never_reach_the_app() -> None:
    manager = ConnectionManager(heartbeat=Heartbeat(interval=0.1, timeout=0.5))
    async with manager, websocket_session(echo_app(manager), "/ws") as ws:
        for _ in range(3):
            with anyio.fail_after(5):
                assert await ws.receive_json() == {"type": "ping"}
            await ws.send_json({"type": "pong"})
        await ws.send_text("hello")
        with anyio.fail_after(5):
            while (text := await ws.receive_text()) != "hello":  # pings may come first
                assert text == '{"type":"ping"}', "a pong was echoed: the app saw it"
    assert manager.stats().heartbeat_timeouts == 0


async def test_an_unanswered_ping_closes_4001() -> None:
    metrics = Metrics(CollectorRegistry())
    manager = ConnectionManager(heartbeat=Heartbeat(interval=0.1, timeout=0.2), metrics=metrics)
    async with manager, websocket_session(echo_app(manager), "/ws") as ws:
        assert await ws.receive_json() == {"type": "ping"}
        with anyio.fail_after(5):
            assert await ws.receive_close() == 4001
        assert ws.close_reason == "heartbeat timeout"
    assert manager.stats().heartbeat_timeouts == 1
    labels = {"reason": "heartbeat_timeout"}
    assert metrics.registry.get_sample_value("asgi_rt_heartbeat_closes_total", labels) == 1


async def test_a_silent_connection_is_closed_4000_after_the_idle_timeout() -> None:
    manager = ConnectionManager(idle_timeout=0.2)
    async with manager, websocket_session(echo_app(manager), "/ws") as ws:
        await ws.send_text("one frame resets the clock")
        assert await ws.receive_text() == "one frame resets the clock"
        with anyio.fail_after(5):
            assert await ws.receive_close() == 4000
    assert manager.stats().idle_timeouts == 1
    assert len(manager) == 0


async def test_heartbeat_needs_a_running_manager() -> None:
    manager = ConnectionManager(heartbeat=Heartbeat())
    with pytest.raises(RuntimeError, match="async with manager"):
        async with websocket_session(echo_app(manager), "/ws"):
            pass  # pragma: no cover


def test_heartbeat_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="> 0"):
        Heartbeat(interval=0)
    with pytest.raises(ValueError, match="idle_timeout"):
        ConnectionManager(idle_timeout=0)


@pytest.mark.server
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_heartbeat_timeout_on_a_real_server(serve: Any, anyio_backend: str) -> None:
    import asyncio
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    import websockets
    from starlette.applications import Starlette

    manager = ConnectionManager(heartbeat=Heartbeat(interval=0.1, timeout=0.3))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with manager:  # the sweeper runs on the server's own loop
            yield

    app = echo_app(manager)
    app.router.lifespan_context = lifespan
    server = serve(app, lifespan="on")
    async with websockets.connect(f"{server.url}/ws") as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "ping"}
        await ws.send(json.dumps({"type": "pong"}))  # answered once, then silence
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "heartbeat timeout")
