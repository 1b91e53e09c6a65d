"""ClientPool against a real uvicorn, including a restart under load."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from asgi_rt import ConnectionManager, PoolExhausted, UpstreamUnavailable
from asgi_rt.client import Backoff, ClientPool

from .._server import RunningServer, await_for
from .._system import free_port
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
            await await_for(lambda: pool.waiting == 1, what="the first waiter")
            with pytest.raises(PoolExhausted, match="already wait"):
                await _echo(pool, "one too many")
            with pytest.raises(PoolExhausted, match="no free connection"):
                await waiter


async def test_a_burst_admits_size_plus_max_waiters(serve: Callable[..., RunningServer]) -> None:
    server = serve(echo_app(ConnectionManager()))
    release, lent = asyncio.Event(), []

    async def borrow(n: int) -> None:
        async with pool.connection():
            lent.append(n)
            await release.wait()

    async with ClientPool(f"{server.url}/ws", size=2, max_waiters=3) as pool:
        burst = asyncio.gather(*(borrow(n) for n in range(5)))  # 2 lent, 3 wait
        await await_for(lambda: len(lent) == 2 and pool.waiting == 3, what="2 lent, 3 waiting")
        with pytest.raises(PoolExhausted, match="3 callers already wait"):
            await borrow(5)
        release.set()
        await asyncio.wait_for(burst, 10)
    assert sorted(lent) == [0, 1, 2, 3, 4]


async def test_a_down_upstream_trips_the_breaker_then_recovers() -> None:
    port, tried = free_port(), []

    async def counting_connect(uri: str, **options: object) -> ClientConnection:
        tried.append(uri)
        return await connect(uri, **options)  # type: ignore[arg-type]

    pool = ClientPool(f"ws://127.0.0.1:{port}/ws", size=4, connect=counting_connect,
                      backoff=Backoff(initial=1.0, maximum=1.0))  # fmt: skip
    outcomes = await asyncio.gather(*(_echo(pool, "x") for _ in range(20)),
                                    return_exceptions=True)  # fmt: skip
    assert all(isinstance(o, UpstreamUnavailable) for o in outcomes), outcomes
    assert len(tried) <= 4  # not one refused connect per borrower
    refused = [o for o in outcomes if isinstance(o.__cause__, ConnectionRefusedError)]
    assert refused and "cannot connect to" in str(refused[0])
    assert any("unavailable after" in str(o) for o in outcomes)
    server = RunningServer(echo_app(ConnectionManager()), port=port)
    server.start()
    try:
        for _ in range(200):  # the breaker lets a trial through within 1 s
            try:
                assert await _echo(pool, "back") == "back"
                break
            except UpstreamUnavailable as down:
                await asyncio.sleep(down.retry_after + 0.01)
        else:
            raise AssertionError("the pool never recovered")
        await pool.aclose()
    finally:
        server.stop()


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
