"""RedisBackend against a real redis-server: restarts, output-buffer kills, two workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
import websockets

from asgi_rt.backends import HistoryGap, Publication, PublishNotApplied, PublishOutcomeUnknown
from asgi_rt.backends.redis import RedisBackend

from .._poll import await_true
from .._redis import RedisServer
from .._server import await_for
from .._system import free_port, listening, spawn_uvicorn

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _next(backend: RedisBackend, timeout: float = 10) -> Publication:
    """The next publication (a Resync notice after a reconnect is skipped)."""
    iterator = backend.publications()
    while not isinstance(item := await asyncio.wait_for(iterator.__anext__(), timeout),
                         Publication):  # fmt: skip
        pass
    return item


async def test_restart_reconnects_resubscribes_and_changes_the_epoch(
    redis_server: RedisServer,
) -> None:
    states: list[bool] = []
    async with (
        RedisBackend.from_url(redis_server.url, on_listener_state=states.append) as one,
        RedisBackend.from_url(redis_server.url) as two,
    ):
        for backend in (one, two):
            await await_for(lambda b=backend: b.listener_up)
            await backend.subscribe("room")
        before = await one.publish("room", b"before")
        assert (await _next(two)).data == b"before"
        await _next(one)
        redis_server.stop()
        await await_for(lambda: not one.listener_up and not two.listener_up, what="outage seen")
        with pytest.raises(PublishNotApplied, match="not applied"):
            await one.publish("room", b"during the outage")  # fails fast, never hangs
        redis_server.start()
        await await_for(lambda: one.listener_up and two.listener_up, timeout=10, what="back")
        assert states[:3] == [True, False, True]
        assert one.reconnects >= 1 and two.reconnects >= 1
        client = aioredis.Redis.from_url(redis_server.url)
        counts = dict(await client.pubsub_numsub("asgi_rt:pub:room"))
        await client.aclose()
        assert counts[b"asgi_rt:pub:room"] == 2  # both workers resubscribed
        after = await one.publish("room", b"after")
        assert (await _next(two)).data == b"after"
        assert after.epoch != before.epoch  # history was lost with the restart
        with pytest.raises(HistoryGap) as gap:
            await one.history("room", before.seq, epoch=before.epoch)
        assert gap.value.reason == "epoch changed"


async def test_an_output_buffer_kill_is_detected_and_recovered(redis_server: RedisServer) -> None:
    admin = aioredis.Redis.from_url(redis_server.url)
    await admin.config_set("client-output-buffer-limit", "pubsub 64kb 32kb 1")
    async with RedisBackend.from_url(redis_server.url, buffer=1) as stalled:
        await await_for(lambda: stalled.listener_up)
        await stalled.subscribe("room")
        await _subscribed(admin)
        listeners_before = await admin.pubsub_numsub("asgi_rt:pub:room")
        assert listeners_before == [(b"asgi_rt:pub:room", 1)]
        # Nobody reads publications(): the listener stops reading Redis. Once the kernel
        # buffers are full, Redis' output buffer for it passes 64 KB and Redis kills it.
        killed = listeners_before
        for _ in range(40):  # at most 40 MB
            for _ in range(100):
                await admin.publish("asgi_rt:pub:room", b"e 1 " + b"x" * 10_000)
            killed = await admin.pubsub_numsub("asgi_rt:pub:room")
            if killed[0][1] == 0:
                break
        assert killed == [(b"asgi_rt:pub:room", 0)], "Redis should have killed the slow listener"
        deadline = asyncio.get_running_loop().time() + 20
        while stalled.reconnects < 1:  # reading again, the listener meets the dead connection
            assert asyncio.get_running_loop().time() < deadline, "the kill was never noticed"
            with contextlib.suppress(asyncio.TimeoutError):
                await _next(stalled, timeout=0.5)
        await await_for(lambda: stalled.listener_up, timeout=10, what="reconnected")
        await _subscribed(admin)  # resubscribed on the new connection
        published = await stalled.publish("room", b"fresh")
        while (got := await _next(stalled)).data != b"fresh":
            pass
        assert got.seq == published.seq
    await admin.aclose()


@pytest.fixture
def two_workers(redis_server: RedisServer) -> Iterator[list[int]]:
    ports = [free_port(), free_port()]
    env = {"ASGI_RT_TEST_BACKEND": redis_server.url, "PATH": ""}
    procs = [spawn_uvicorn("tests._rooms_app:app", port, env=env) for port in ports]
    yield ports
    for proc in procs:
        proc.terminate()
        proc.wait(10)


async def _connect(port: int, room: str) -> websockets.ClientConnection:
    await await_for(lambda: listening(port), 20, f"the worker on {port}")
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws/{room}", max_queue=None)
    assert json.loads(await ws.recv())["type"] == "joined"  # the room's announced position
    return ws


async def test_two_worker_processes_share_rooms_exactly_once_in_order(
    two_workers: list[int],
) -> None:
    a, b = two_workers
    on_a, on_b = await _connect(a, "lobby"), await _connect(b, "lobby")
    for i in range(50):
        await on_b.send(str(i))
    for ws in (on_a, on_b):
        got = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(50)]
        assert [f["data"] for f in got] == [str(i) for i in range(50)]
        assert [f["seq"] for f in got] == list(range(1, 51))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(on_a.recv(), 0.3)  # nothing twice
    await on_a.close()
    await on_b.close()


async def test_members_get_what_was_published_while_their_listener_reconnected(
    redis_server: RedisServer,
) -> None:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    from asgi_rt import RoomManager
    from asgi_rt.testing import websocket_session

    joined = asyncio.Event()
    async with (
        RoomManager(backend=redis_server.url) as worker_a,
        RoomManager(backend=redis_server.url) as worker_b,
    ):

        async def endpoint(websocket: WebSocket) -> None:
            async with worker_a.connect(websocket) as conn:
                await worker_a.join(conn, "room")
                joined.set()
                async for _ in conn:
                    pass

        app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
        backend_a = worker_a.backend
        assert isinstance(backend_a, RedisBackend)
        async with websocket_session(app, "/ws") as member:
            await joined.wait()
            admin = aioredis.Redis.from_url(redis_server.url)
            await _subscribed(admin)
            await worker_b.publish("room", "first")
            assert (await member.receive_json())["seq"] == 1
            await admin.client_kill_filter(_type="pubsub")  # both listeners lose their connection
            for text in ("missed-1", "missed-2"):
                await worker_b.publish("room", text)
            await await_for(lambda: backend_a.reconnects >= 1)
            await _subscribed(admin)  # the pubsub kill left none until it resubscribed
            await worker_b.publish("room", "after")
            got = [await member.receive_json() for _ in range(3)]
            assert [(f["seq"], f["data"]) for f in got] == [
                (2, "missed-1"), (3, "missed-2"), (4, "after"),
            ]  # fmt: skip
            await admin.aclose()


async def _subscribed(admin: aioredis.Redis, channel: str = "asgi_rt:pub:room") -> None:
    """Wait until Redis reports a subscriber on ``channel`` (what a publisher reaches)."""

    async def probe() -> bool:
        return dict(await admin.pubsub_numsub(channel)).get(channel.encode(), 0) >= 1

    await await_true(probe, what=f"a subscriber on {channel}")


def _room_endpoint(
    rooms: Any, joined: asyncio.Event, *, room: str = "room", announce: bool = True
) -> Any:
    """An in-process app whose /ws joins ``room`` (announcing it or not) and stays."""
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def endpoint(websocket: WebSocket) -> None:
        async with rooms.connect(websocket) as conn:
            await rooms.join(conn, room, announce=announce)
            joined.set()
            async for _ in conn:
                pass

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)])


async def test_members_that_stay_connected_through_a_restart_are_told_then_get_everything(
    redis_server: RedisServer,
) -> None:
    """A Redis restart loses the history and restarts the numbering. A member whose room was
    far ahead (seq 30) must be told (recovery_failed naming the new position) and then get
    every later publication, not wait for the new numbering to pass the old one."""
    from asgi_rt import RoomManager
    from asgi_rt.testing import websocket_session

    joined = asyncio.Event()
    async with (
        RoomManager(backend=redis_server.url) as worker_a,
        RoomManager(backend=redis_server.url) as worker_b,
    ):
        app = _room_endpoint(worker_a, joined)
        for i in range(30):
            await worker_b.publish("room", f"old-{i}")
        async with websocket_session(app, "/ws") as member:
            await joined.wait()
            announced = await member.receive_json()
            assert (announced["type"], announced["seq"]) == ("joined", 30)
            await asyncio.to_thread(redis_server.stop)  # the loop runs meanwhile, as in a server
            await asyncio.to_thread(redis_server.start)
            sent = []
            for i in range(5):  # the first ones may fail while the pool reconnects
                with contextlib.suppress(PublishNotApplied):
                    sent.append(await worker_b.publish("room", f"new-{i}"))
            assert sent, "no publish went through after the restart"
            notice = await asyncio.wait_for(member.receive_json(), 10)
            assert notice["type"] == "recovery_failed" and notice["reason"] == "epoch changed"
            assert notice["epoch"] == sent[0].epoch != announced["epoch"]
            got = [await asyncio.wait_for(member.receive_json(), 10) for _ in sent]
            assert [(f["seq"], f["epoch"], f["data"]) for f in got] == [
                (p.seq, p.epoch, f"new-{i}") for i, p in enumerate(sent)
            ]
            assert notice["seq"] < got[0]["seq"]


async def test_a_publish_whose_answer_is_lost_says_so_and_a_keyed_retry_applies_once(
    redis_server: RedisServer,
) -> None:
    """SIGSTOP: the publish reaches Redis but no answer comes. That is not "not applied":
    Redis runs it on SIGCONT. The retry with the same key must not publish it twice."""
    assert redis_server.proc is not None
    async with (
        RedisBackend.from_url(redis_server.url, publish_timeout=0.5) as publisher,
        RedisBackend.from_url(redis_server.url) as listener,
    ):
        await await_for(lambda: listener.listener_up)
        await listener.subscribe("room")
        await publisher.publish("room", b"warm")  # a pooled connection, so no connect below
        assert (await _next(listener)).data == b"warm"
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(PublishOutcomeUnknown, match="may or may not"):
                await publisher.publish("room", b"ambiguous", idempotency_key="k1")
        finally:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        retried = await publisher.publish("room", b"ambiguous", idempotency_key="k1")
        await publisher.publish("room", b"next")
        got = [await _next(listener) for _ in range(2)]
    assert [p.data for p in got] == [b"ambiguous", b"next"]  # applied once, by the first try
    assert retried.seq == got[0].seq


async def test_room_keys_expire_after_room_ttl(redis_server: RedisServer) -> None:
    admin = aioredis.Redis.from_url(redis_server.url)
    async with RedisBackend.from_url(redis_server.url, room_ttl=60) as backend:
        await backend.publish("room", b"x")
        ttls = [await admin.pttl(f"asgi_rt:{kind}:room") for kind in ("seq", "epoch", "stream")]
    await admin.aclose()
    assert all(0 < ttl <= 60_000 for ttl in ttls), ttls


async def test_a_herd_of_joins_waits_for_the_pool_instead_of_closing_1011(
    redis_server: RedisServer, serve: Any
) -> None:
    """200 clients joining at once (a restart's reconnect herd), more than the pool holds:
    each waits for a connection, none is closed 1011, and uvicorn logs no ASGI exception."""
    from asgi_rt import RoomManager

    from .._rooms_app import make_app

    server = serve(make_app(RoomManager(backend=redis_server.url), auth=False), lifespan="on")

    async def join(i: int) -> str:
        async with websockets.connect(f"{server.url}/ws/room-{i % 50}") as ws:
            return str(json.loads(await asyncio.wait_for(ws.recv(), 30))["type"])

    results = await asyncio.gather(*(join(i) for i in range(200)), return_exceptions=True)
    assert results == ["joined"] * 200


async def test_a_restart_from_an_older_snapshot_is_told_not_taken_for_duplicates(
    redis_server: RedisServer,
) -> None:
    """Redis restarted from a snapshot taken at seq 3 while members had seen 8: the room's
    seqs 4.. are reused for new publications, which members used to drop as duplicates."""
    from asgi_rt import RoomManager
    from asgi_rt.testing import websocket_session

    joined = asyncio.Event()
    async with RoomManager(backend=redis_server.url) as rooms:
        backend = rooms.backend
        assert isinstance(backend, RedisBackend)
        async with websocket_session(
            _room_endpoint(rooms, joined, room="r", announce=False), "/ws"
        ) as ws:
            await joined.wait()
            for i in range(1, 9):
                if i == 4:
                    redis_server.command("SAVE")  # the snapshot holds seq 3
                await rooms.publish("r", i)
            assert [(await ws.receive_json())["seq"] for _ in range(8)] == list(range(1, 9))
            reconnects = backend.reconnects
            await asyncio.to_thread(redis_server.kill)
            await asyncio.to_thread(redis_server.start)  # loads the snapshot: seq is 3 again
            await await_for(lambda: backend.reconnects > reconnects and backend.listener_up,
                            20, "the listener back")  # fmt: skip
            notice = await asyncio.wait_for(ws.receive_json(), 10)
            assert (notice["type"], notice["reason"], notice["seq"]) == (
                "recovery_failed",
                "rolled back",
                3,
            )
            after = await rooms.publish("r", "new")
            got = await asyncio.wait_for(ws.receive_json(), 10)
            assert (got["seq"], got["data"]) == (after.seq, "new") == (4, "new")


async def test_a_plain_member_gets_what_the_listener_missed_before_its_first_frame(
    redis_server: RedisServer,
) -> None:
    """A member that joined without since or announce (the README's plainest route) had no
    position until its first publication: what the listener missed before that was lost."""
    from asgi_rt import RoomManager
    from asgi_rt.testing import websocket_session

    joined = asyncio.Event()
    async with RoomManager(backend=redis_server.url) as rooms:
        backend = rooms.backend
        assert isinstance(backend, RedisBackend)
        await await_for(lambda: backend.listener_up)
        async with websocket_session(
            _room_endpoint(rooms, joined, room="r", announce=False), "/ws"
        ) as ws:
            await joined.wait()
            reconnects = backend.reconnects
            redis_server.command("CLIENT", "KILL", "TYPE", "pubsub")
            for i in range(1, 4):
                await rooms.publish("r", i)  # the listener may be down: history keeps them
            await await_for(lambda: backend.reconnects > reconnects and backend.listener_up,
                            20, "the listener back")  # fmt: skip
            await rooms.publish("r", 4)
            got = [await asyncio.wait_for(ws.receive_json(), 10) for _ in range(4)]
    assert [(f["seq"], f["data"]) for f in got] == [(1, 1), (2, 2), (3, 3), (4, 4)]


async def test_a_stray_message_on_a_room_channel_does_not_kill_the_listener(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Another app sharing the Redis, or a stray PUBLISH, used to take the whole manager
    down with a ValueError out of the listener."""
    from asgi_rt import RoomManager
    from asgi_rt.testing import websocket_session

    joined = asyncio.Event()
    async with RoomManager(backend=redis_server.url) as rooms:
        async with websocket_session(
            _room_endpoint(rooms, joined, room="r", announce=False), "/ws"
        ) as ws:
            await joined.wait()
            first = await rooms.publish("r", "first")
            assert (await asyncio.wait_for(ws.receive_json(), 10))["data"] == "first"
            stray = f"{first.epoch} {first.seq + 1} not-a-room-message"
            redis_server.command("PUBLISH", "asgi_rt:pub:r", stray)
            await rooms.publish("r", "real")
            got = await asyncio.wait_for(ws.receive_json(), 10)
    assert got["data"] == "real"
    assert "ignoring what the backplane delivered" in caplog.text
