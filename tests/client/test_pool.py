"""ClientPool against a real uvicorn, including a restart under load."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from websockets.exceptions import ConnectionClosed

from asgi_rt import ConnectionManager, PoolExhausted
from asgi_rt.client import ClientPool

from .._server import RunningServer, await_for
from ..apps import echo_app

pytestmark = [pytest.mark.anyio, pytest.mark.server]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the websockets client is asyncio


async def _echo(pool: ClientPool, text: str) -> str:
    async with pool.connection() as ws:
        await ws.send(text)
        reply = await asyncio.wait_for(ws.recv(), 5)
        return str(reply)


async def test_connections_are_lazy_bounded_and_reused(
    serve: Callable[..., RunningServer],
) -> None:
    manager = ConnectionManager()
    server = serve(echo_app(manager))
    async with ClientPool(f"{server.url}/ws", size=3, max_waiters=60) as pool:
        assert pool.created == 0
        results = await asyncio.gather(*(_echo(pool, f"m{i}") for i in range(60)))
        assert results == [f"m{i}" for i in range(60)]
        assert pool.created == 3
        assert len(manager) == 3
    await await_for(lambda: len(manager) == 0, what="aclose closed them")


async def test_waiters_are_bounded_in_time_and_number(serve: Callable[..., RunningServer]) -> None:
    server = serve(echo_app(ConnectionManager()))
    async with ClientPool(f"{server.url}/ws", size=1, acquire_timeout=0.2, max_waiters=1) as pool:
        async with pool.connection():
            waiter = asyncio.ensure_future(_echo(pool, "late"))
            await await_for(lambda: pool._waiting == 1, what="the first waiter")
            with pytest.raises(PoolExhausted, match="already wait"):
                await _echo(pool, "one too many")
            with pytest.raises(PoolExhausted, match="no free connection"):
                await waiter


async def test_a_broken_connection_is_never_lent_again(serve: Callable[..., RunningServer]) -> None:
    server = serve(echo_app(ConnectionManager()))
    async with ClientPool(f"{server.url}/ws", size=1) as pool:
        with pytest.raises(RuntimeError):
            async with pool.connection():
                raise RuntimeError("the caller's code failed mid-exchange")
        assert await _echo(pool, "fresh") == "fresh"
        assert (pool.created, pool.discarded) == (2, 1)


ROUNDS = 150


async def test_a_server_restart_under_load_is_survived(serve: Callable[..., RunningServer]) -> None:
    first = serve(echo_app(ConnectionManager()))
    port = first.port
    pool = ClientPool(f"ws://127.0.0.1:{port}/ws", size=4, acquire_timeout=2)
    done: list[str] = []

    async def worker(n: int) -> None:
        for i in range(ROUNDS):
            await asyncio.sleep(0.01)  # pace the load so that it spans the restart
            for _ in range(100):  # the caller's own retry; the pool never lends a dead socket
                try:
                    done.append(await _echo(pool, f"{n}-{i}"))
                    break
                except (ConnectionClosed, OSError, PoolExhausted):
                    await asyncio.sleep(0.05)

    load = asyncio.gather(*(worker(n) for n in range(8)))
    await await_for(lambda: len(done) >= 40, what="load running")
    await asyncio.get_running_loop().run_in_executor(None, first.stop)
    second = serve(echo_app(ConnectionManager()), port=port)
    await asyncio.wait_for(load, 60)
    assert sorted(done) == sorted(f"{n}-{i}" for n in range(8) for i in range(ROUNDS))
    assert pool.discarded >= 1  # the restart broke pooled connections, replaced since
    assert second.port == port
    await pool.aclose()
