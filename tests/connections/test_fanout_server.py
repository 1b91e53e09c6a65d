"""Fan-out and backpressure on the wire: real uvicorn, real clients, a stalled raw peer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import anyio.lowlevel
import pytest
import websockets

from asgi_rt import ConnectionManager, Overflow

from .._rawclient import RawClient, close_code
from .._server import RunningServer, await_for
from ..apps import listen_app

pytestmark = [pytest.mark.anyio, pytest.mark.server]

HEALTHY = 50
PAYLOAD = "x" * 1000  # big enough that a stalled peer's buffers fill within a few hundred


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the websockets client is asyncio; the server runs in its own thread


async def _collect(ws: websockets.ClientConnection, count: int) -> list[int]:
    seen = []
    while len(seen) < count:
        seen.append(json.loads(await ws.recv())["n"])
    return seen


KeyOf = Callable[[int], str | None]


async def _broadcast_series(
    server: RunningServer, manager: ConnectionManager, count: int, key_of: KeyOf = lambda n: None
) -> None:
    async def run() -> None:
        for n in range(count):
            await manager.broadcast({"n": n, "pad": PAYLOAD}, key=key_of(n))
            await anyio.lowlevel.checkpoint()  # let transports flush, as a real publisher would

    await server.acall(run, timeout=30)


async def _stalled_scenario(serve: Callable[..., RunningServer], raw: Callable[..., RawClient],
                            manager: ConnectionManager, count: int, ws_impl: str = "websockets",
                            key_of: Callable[[int], str | None] = lambda n: None,
                            ) -> tuple[RunningServer, RawClient]:  # fmt: skip
    server = serve(listen_app(manager), ws=ws_impl, sndbuf=4096)
    stalled = raw(server.port, "/ws?id=stalled", rcvbuf=4096)
    clients = [await websockets.connect(f"{server.url}/ws?id=h{i}") for i in range(HEALTHY)]
    await await_for(lambda: len(manager) == HEALTHY + 1, what="all registered")
    readers = [asyncio.ensure_future(_collect(ws, count)) for ws in clients]
    await _broadcast_series(server, manager, count, key_of)
    results = await asyncio.wait_for(asyncio.gather(*readers), 30)
    assert all(seen == list(range(count)) for seen in results), "a healthy peer missed or reordered"
    for ws in clients:
        await ws.close()
    return server, stalled


@pytest.mark.parametrize("ws_impl", ["websockets", "websockets-sansio", "wsproto"])
async def test_stalled_peer_is_closed_1013_and_healthy_peers_get_everything(
    serve: Callable[..., RunningServer], raw: Callable[..., RawClient], ws_impl: str
) -> None:
    manager = ConnectionManager(queue_size=16, overflow=Overflow.DISCONNECT, send_timeout=None)
    _server, stalled = await _stalled_scenario(serve, raw, manager, 400, ws_impl)
    await await_for(lambda: manager.get("stalled") is None, what="stalled peer evicted")
    assert manager.stats().slow_consumer_disconnects == 1
    frames = stalled.read_frames()
    if ws_impl == "websockets":
        assert close_code(frames) == 1013
    else:
        # websockets-sansio waits for a writable transport before any send, close included,
        # and ASGI has no abort: the peer sees its buffered data, then the TCP connection end.
        assert close_code(frames) is None and stalled.eof
    await await_for(lambda: len(manager) == 0, what="all unregistered")


async def test_drop_oldest_keeps_a_bounded_queue_and_the_newest_messages(
    serve: Callable[..., RunningServer], raw: Callable[..., RawClient]
) -> None:
    manager = ConnectionManager(queue_size=8, overflow=Overflow.DROP_OLDEST, send_timeout=None)
    _server, stalled = await _stalled_scenario(serve, raw, manager, 400)
    conn = manager.get("stalled")
    assert conn is not None and conn.state == "open"
    assert conn.queued <= 8
    assert manager.stats().dropped_oldest > 0
    received = _numbers(stalled.read_frames(timeout=3))
    assert received[-1] == 399, "the newest message must survive DROP_OLDEST"
    assert received == sorted(set(received)), "survivors arrive in publish order, once"


async def test_drop_newest_keeps_what_was_queued_first(
    serve: Callable[..., RunningServer], raw: Callable[..., RawClient]
) -> None:
    manager = ConnectionManager(queue_size=8, overflow=Overflow.DROP_NEWEST, send_timeout=None)
    _server, stalled = await _stalled_scenario(serve, raw, manager, 400)
    conn = manager.get("stalled")
    assert conn is not None and conn.state == "open" and conn.queued == 8
    assert manager.stats().dropped_newest > 0
    received = _numbers(stalled.read_frames(timeout=3))
    assert 399 not in received
    assert received == list(range(len(received))), "DROP_NEWEST delivers a gap-free prefix"


async def test_coalesce_delivers_the_latest_value_per_key(
    serve: Callable[..., RunningServer], raw: Callable[..., RawClient]
) -> None:
    manager = ConnectionManager(queue_size=8, overflow=Overflow.COALESCE, send_timeout=None)
    _server, stalled = await _stalled_scenario(
        serve, raw, manager, 400, key_of=lambda n: f"k{n % 3}"
    )
    assert manager.stats().coalesced > 0
    received = _numbers(stalled.read_frames(timeout=3))
    assert {397, 398, 399} <= set(received), "the last value of every key arrives"
    assert len(received) < 400


async def test_send_timeout_closes_a_peer_that_stopped_reading(
    serve: Callable[..., RunningServer], raw: Callable[..., RawClient]
) -> None:
    manager = ConnectionManager(queue_size=10_000, send_timeout=0.5)
    server = serve(listen_app(manager), sndbuf=4096, ping_interval=None)
    stalled = raw(server.port, "/ws?id=stalled", rcvbuf=4096)
    await await_for(lambda: len(manager) == 1)
    await _broadcast_series(server, manager, 300)
    await await_for(lambda: len(manager) == 0, what="slot freed after send_timeout")
    assert manager.stats().send_timeouts == 1
    assert manager.stats().slow_consumer_disconnects == 0
    assert close_code(stalled.read_frames()) == 1013


def _numbers(frames: list[tuple[int, bytes]]) -> list[int]:
    return [json.loads(payload)["n"] for opcode, payload in frames if opcode == 0x1]
