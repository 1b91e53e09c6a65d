"""Close codes on the wire and clean teardown: real uvicorn, real websockets clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import anyio.lowlevel
import pytest
import websockets

from asgi_rt import ConnectionManager, RateLimit

from .._rawclient import RawClient
from .._server import RunningServer, await_for
from .._system import close_of
from ..apps import echo_app, listen_app

pytestmark = [pytest.mark.anyio, pytest.mark.server]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("ws_impl", ["websockets", "websockets-sansio", "wsproto"])
async def test_oversize_frame_closes_1009_on_the_wire(
    serve: Callable[..., RunningServer], ws_impl: str
) -> None:
    manager = ConnectionManager(max_message_size=1024)
    server = serve(echo_app(manager), ws=ws_impl)
    async with websockets.connect(f"{server.url}/ws") as ws:
        await ws.send("a" * 1024)
        assert await ws.recv() == "a" * 1024
        await ws.send("a" * 1025)
        assert await close_of(ws) == (1009, "message too big")
    await await_for(lambda: len(manager) == 0)


async def test_rate_limit_closes_1008_on_the_wire(serve: Callable[..., RunningServer]) -> None:
    manager = ConnectionManager(rate_limit=RateLimit(per_second=1, burst=5))
    server = serve(echo_app(manager))
    async with websockets.connect(f"{server.url}/ws") as ws:
        for i in range(20):
            await ws.send(str(i))
        code, reason = await close_of(ws)
    assert (code, reason) == (1008, "rate limit exceeded")
    assert manager.stats().rate_limit_closes == 1


async def test_bad_json_is_answered_with_an_error_frame_on_the_wire(
    serve: Callable[..., RunningServer],
) -> None:
    manager = ConnectionManager()
    server = serve(echo_app(manager, kind="json"))
    async with websockets.connect(f"{server.url}/ws") as ws:
        await ws.send("{oops")
        error = json.loads(await ws.recv())
        assert error["type"] == "error"
        assert error["data"]["code"] == "invalid_json"
        await ws.send('{"still": "here"}')
        assert json.loads(await ws.recv()) == {"still": "here"}


async def test_close_all_sends_1001_to_every_client(serve: Callable[..., RunningServer]) -> None:
    manager = ConnectionManager()
    server = serve(listen_app(manager))
    clients = [await websockets.connect(f"{server.url}/ws") for _ in range(20)]
    await await_for(lambda: len(manager) == 20)
    await server.acall(manager.close_all)
    results = await asyncio.gather(*(close_of(ws) for ws in clients))
    assert results == [(1001, "server shutdown")] * 20
    await await_for(lambda: len(manager) == 0)


async def test_resets_mid_send_leave_no_connection_and_no_task(
    serve: Callable[..., RunningServer], raw: Callable[..., RawClient]
) -> None:
    manager = ConnectionManager(send_timeout=2.0)
    server = serve(listen_app(manager), sndbuf=4096)
    baseline = server.task_count()
    resetters = [raw(server.port, f"/ws?id=r{i}", rcvbuf=4096) for i in range(10)]
    polite = [  # these keep reading (unbounded client-side queue) and close normally
        await websockets.connect(f"{server.url}/ws?id=p{i}", max_queue=None) for i in range(10)
    ]
    await await_for(lambda: len(manager) == 20)

    async def flood() -> None:
        for _ in range(300):
            await manager.broadcast("y" * 2000)
            await anyio.lowlevel.checkpoint()  # yield, as a real publisher would

    flooding = asyncio.ensure_future(server.acall(flood, timeout=30))
    await await_for(lambda: manager.stats().queued > 0, what="sends blocked on stalled peers")
    for client in resetters:
        client.reset()  # TCP RST while the server has sends pending to it
    await asyncio.gather(*(ws.close() for ws in polite))
    await flooding
    await await_for(lambda: len(manager) == 0, what="every connection unregistered")
    await await_for(lambda: server.task_count() == baseline, what="no connection task left")


async def test_server_shutdown_cancels_handlers_cleanly(
    serve: Callable[..., RunningServer],
) -> None:
    manager = ConnectionManager()
    server = serve(listen_app(manager))
    clients = [await websockets.connect(f"{server.url}/ws") for _ in range(5)]
    await await_for(lambda: len(manager) == 5)
    await asyncio.get_running_loop().run_in_executor(None, server.stop)
    codes = await asyncio.gather(*(close_of(ws) for ws in clients))
    assert {code for code, _ in codes} <= {1001, 1012}
    assert len(manager) == 0
