"""ConnectionManager in process, under asyncio and trio (the websocket_session driver)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import (
    ConnectionClosed,
    ConnectionManager,
    DuplicateConnectionId,
    Overflow,
    RateLimit,
)
from asgi_rt.testing import websocket_session

from .._poll import await_for
from ..apps import echo_app

pytestmark = pytest.mark.anyio


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    await await_for(predicate, timeout, interval=0.001)


async def first_in_flight(manager: ConnectionManager, conn_id: str, text: str) -> None:
    """Send ``text`` and wait until it is in flight (out of the queue), on any backend."""
    await manager.broadcast(text)
    conn = manager.get(conn_id)
    assert conn is not None
    await until(lambda: conn.queued == 0)


def hold_app(
    manager: ConnectionManager, opened: anyio.Event | None = None, **meta: Any
) -> Starlette:
    """``/ws`` registers, signals ``opened``, then listens until the connection ends."""

    async def endpoint(websocket: WebSocket) -> None:
        async with manager.connect(websocket, id=websocket.query_params.get("id"), **meta) as conn:
            if opened is not None:
                opened.set()
            async for _ in conn:
                pass

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)])


async def test_echo_round_trip_and_clean_unregister() -> None:
    manager = ConnectionManager()
    async with websocket_session(echo_app(manager), "/ws?id=a") as ws:
        await ws.send_text("hello")
        assert await ws.receive_text() == "hello"
        await ws.send_bytes(b"\x00\x01")
        assert (await ws.receive())["bytes"] == b"\x00\x01"
        assert manager.get("a") is not None and len(manager) == 1
    assert len(manager) == 0
    assert manager.stats().closed == 1


async def test_bad_json_gets_an_error_frame_and_the_loop_goes_on() -> None:
    manager = ConnectionManager()
    async with websocket_session(echo_app(manager, kind="json"), "/ws") as ws:
        await ws.send_text("{not json")
        error = await ws.receive_json()
        assert error["type"] == "error" and error["data"]["code"] == "invalid_json"
        await ws.send_json({"ok": True})
        assert await ws.receive_json() == {"ok": True}
    assert manager.stats().invalid_frames == 1


async def test_too_many_bad_json_frames_close_1007() -> None:
    manager = ConnectionManager(max_invalid_frames=3)
    async with websocket_session(echo_app(manager, kind="json"), "/ws") as ws:
        for _ in range(3):
            await ws.send_text("nope")
        assert await ws.receive_close() == 1007
    assert manager.stats().invalid_data_closes == 1


async def test_binary_frame_in_iter_text_closes_1003() -> None:
    manager = ConnectionManager()
    async with websocket_session(echo_app(manager, kind="text"), "/ws") as ws:
        await ws.send_bytes(b"\xff")
        assert await ws.receive_close() == 1003


async def test_oversize_frame_closes_1009() -> None:
    manager = ConnectionManager(max_message_size=64)
    async with websocket_session(echo_app(manager), "/ws") as ws:
        await ws.send_text("é" * 40)  # 40 characters, 80 bytes of UTF-8
        assert await ws.receive_close() == 1009
    assert manager.stats().oversize_closes == 1 and len(manager) == 0


async def test_rate_limit_closes_1008_after_the_burst() -> None:
    manager = ConnectionManager(rate_limit=RateLimit(per_second=0.001, burst=3))
    async with websocket_session(echo_app(manager), "/ws") as ws:
        for i in range(3):
            await ws.send_text(str(i))
            assert await ws.receive_text() == str(i)
        await ws.send_text("one too many")
        assert await ws.receive_close() == 1008
        assert ws.close_reason == "rate limit exceeded"
    assert manager.stats().rate_limit_closes == 1


async def test_broadcast_encodes_json_once_and_respects_exclude_and_to() -> None:
    calls = 0

    def dumps(value: Any) -> str:
        nonlocal calls
        calls += 1
        return json.dumps(value)

    manager = ConnectionManager(dumps=dumps)
    app = hold_app(manager)
    async with (
        websocket_session(app, "/ws?id=a") as a,
        websocket_session(app, "/ws?id=b") as b,
        websocket_session(app, "/ws?id=c") as c,
    ):
        conn_a, conn_b = manager.get("a"), manager.get("b")
        assert conn_a is not None and conn_b is not None
        assert await manager.broadcast({"n": 1}) == 3
        assert calls == 1
        assert await manager.broadcast({"n": 2}, exclude=conn_a) == 2
        assert await manager.broadcast({"n": 3}, to=[conn_b]) == 1
        assert [await a.receive_json()] == [{"n": 1}]
        assert [await b.receive_json() for _ in range(3)] == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert [await c.receive_json() for _ in range(2)] == [{"n": 1}, {"n": 2}]


async def test_stalled_peer_disconnect_1013_without_touching_others() -> None:
    manager = ConnectionManager(queue_size=4, overflow=Overflow.DISCONNECT)
    app = hold_app(manager)
    async with (
        websocket_session(app, "/ws?id=slow", buffer=0) as slow,
        websocket_session(app, "/ws?id=fast") as fast,
    ):
        for n in range(10):
            await manager.broadcast(str(n))
        assert [await fast.receive_text() for _ in range(10)] == [str(n) for n in range(10)]
        assert await slow.receive_close() == 1013
        assert manager.stats().slow_consumer_disconnects == 1
    assert len(manager) == 0


@pytest.mark.parametrize(
    ("overflow", "expected"),
    [
        (Overflow.DROP_OLDEST, ["0", "7", "8", "9"]),  # "0" was in flight, 1-6 evicted
        (Overflow.DROP_NEWEST, ["0", "1", "2", "3"]),
    ],
)
async def test_drop_policies_keep_a_bounded_queue(overflow: Overflow, expected: list[str]) -> None:
    manager = ConnectionManager(queue_size=3, overflow=overflow)
    async with websocket_session(hold_app(manager), "/ws?id=slow", buffer=0) as slow:
        await first_in_flight(manager, "slow", "0")
        for n in range(1, 10):
            await manager.broadcast(str(n))
        conn = manager.get("slow")
        assert conn is not None and conn.queued == 3
        assert [await slow.receive_text() for _ in range(4)] == expected


async def test_coalesce_replaces_queued_messages_by_key_in_place() -> None:
    manager = ConnectionManager(queue_size=8, overflow=Overflow.COALESCE)
    async with websocket_session(hold_app(manager), "/ws?id=slow", buffer=0) as slow:
        await first_in_flight(manager, "slow", "cpu=1")  # the peer is not reading
        await manager.broadcast("cpu=2", key="cpu")
        await manager.broadcast("mem=1", key="mem")
        await manager.broadcast("cpu=3", key="cpu")
        await manager.broadcast("log", key=None)
        assert [await slow.receive_text() for _ in range(4)] == ["cpu=1", "cpu=3", "mem=1", "log"]
    assert manager.stats().coalesced == 1


async def test_queue_bytes_bounds_the_queue_by_size() -> None:
    manager = ConnectionManager(queue_size=100, queue_bytes=10, overflow=Overflow.DROP_NEWEST)
    async with websocket_session(hold_app(manager), "/ws?id=slow", buffer=0) as slow:
        await first_in_flight(manager, "slow", "in-flight")
        for text in ["aaaa", "bbbb", "cccc"]:
            await manager.broadcast(text)
        assert [await slow.receive_text() for _ in range(3)] == ["in-flight", "aaaa", "bbbb"]
    assert manager.stats().dropped_newest == 1


async def test_send_after_close_raises_connection_closed() -> None:
    manager = ConnectionManager()
    closed = anyio.Event()
    outcome: list[BaseException] = []

    async def endpoint(websocket: WebSocket) -> None:
        async with manager.connect(websocket) as conn:
            await conn.close(4000, "bye")
            try:
                await conn.send("late")
            except ConnectionClosed as exc:
                outcome.append(exc)
            closed.set()

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    async with websocket_session(app, "/ws") as ws:
        assert await ws.receive_close() == 4000
        await closed.wait()
    assert isinstance(outcome[0], ConnectionClosed) and outcome[0].code == 4000


async def test_duplicate_id_is_refused_before_accept() -> None:
    manager = ConnectionManager()
    opened = anyio.Event()
    app = hold_app(manager, opened)
    async with websocket_session(app, "/ws?id=same"):
        await opened.wait()
        with pytest.raises(DuplicateConnectionId, match="'same' is already registered"):
            async with websocket_session(app, "/ws?id=same"):
                pass  # pragma: no cover


async def test_exception_in_handler_closes_1011_and_propagates_unwrapped() -> None:
    manager = ConnectionManager()

    async def endpoint(websocket: WebSocket) -> None:
        async with manager.connect(websocket) as conn:
            await conn.receive()
            raise KeyError("boom")

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    with pytest.raises(KeyError, match="boom"):  # not an ExceptionGroup
        async with websocket_session(app, "/ws") as ws:
            await ws.send_text("go")
            assert await ws.receive_close() == 1011
    assert len(manager) == 0


async def test_cancelled_handler_unregisters_and_leaves_no_task() -> None:
    manager = ConnectionManager()
    opened = anyio.Event()
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            async with websocket_session(hold_app(manager, opened), "/ws", buffer=0):
                await anyio.sleep_forever()

        tg.start_soon(run)
        await opened.wait()
        await manager.broadcast("queued behind nothing: the peer never reads")
        assert len(manager) == 1
        tg.cancel_scope.cancel()
    assert len(manager) == 0
    assert manager.stats().closed == 1


async def test_close_all_drains_queues_then_closes_1001() -> None:
    manager = ConnectionManager()
    app = hold_app(manager)
    async with websocket_session(app, "/ws?id=a") as a, websocket_session(app, "/ws?id=b") as b:
        await manager.broadcast("last words")
        async with anyio.create_task_group() as tg:
            tg.start_soon(manager.close_all)
            for ws in (a, b):
                assert await ws.receive_text() == "last words"
                assert await ws.receive_close() == 1001
    assert len(manager) == 0


async def test_manager_as_context_manager_closes_everything_on_exit() -> None:
    manager = ConnectionManager()
    async with websocket_session(hold_app(manager), "/ws") as ws:
        async with anyio.create_task_group() as tg:

            async def lifespan() -> None:
                async with manager:
                    pass

            tg.start_soon(lifespan)
            assert await ws.receive_close() == 1001


async def test_meta_is_kept_on_the_connection() -> None:
    manager = ConnectionManager()
    opened = anyio.Event()
    async with websocket_session(hold_app(manager, opened, user="ada"), "/ws?id=x"):
        await opened.wait()
        conn = manager.get("x")
        assert conn is not None and conn.meta == {"user": "ada"}
        assert conn in manager and "x" in manager and list(manager) == [conn]


async def test_broadcast_during_the_handshake_skips_the_connection_and_harms_nothing() -> None:
    manager = ConnectionManager()
    opened, release, accepting = anyio.Event(), anyio.Event(), anyio.Event()
    inner = hold_app(manager, opened)

    async def slow_accept(scope: Any, receive: Any, send: Any) -> None:
        async def held_send(message: Any) -> None:
            if message["type"] == "websocket.accept":
                accepting.set()
                await release.wait()
            await send(message)

        await inner(scope, receive, held_send)

    async with anyio.create_task_group() as tg:

        async def broadcast_mid_handshake() -> None:
            await accepting.wait()
            assert await manager.broadcast("too early") == 0
            release.set()

        tg.start_soon(broadcast_mid_handshake)
        async with websocket_session(slow_accept, "/ws?id=late") as ws:
            await opened.wait()
            conn = manager.get("late")
            assert conn is not None and conn.state == "open"
            await manager.broadcast("welcome")
            assert await ws.receive_text() == "welcome"


async def test_close_all_spreads_closes_over_the_window() -> None:
    manager = ConnectionManager()
    app = hold_app(manager)
    closed_at: list[float] = []
    async with anyio.create_task_group() as tg:

        async def client(i: int) -> None:
            async with websocket_session(app, f"/ws?id={i}") as ws:
                assert await ws.receive_close() == 1001
                closed_at.append(anyio.current_time())

        for i in range(10):
            tg.start_soon(client, i)
        await until(lambda: len(manager) == 10)
        await manager.close_all(window=0.5)
    spread = max(closed_at) - min(closed_at)
    # a lower bound only: a slow machine spreads them more, never less
    assert spread >= 0.3, f"closes were not spread: {spread:.3f} s"
