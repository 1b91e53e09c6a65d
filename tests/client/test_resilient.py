"""ResilientClient against real uvicorn servers: restart, drop, refuse, resume."""

from __future__ import annotations

import json
import random
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
import websockets

from asgi_rt import Heartbeat, RoomManager
from asgi_rt.client import (
    Backoff,
    ClientGaveUp,
    Disconnect,
    OutboxFull,
    ResilientClient,
    since_query,
)

from .._poll import await_for
from .._redis import RedisServer
from .._rooms_app import make_app
from .._server import RunningServer
from .._system import free_port, listening, spawn_uvicorn

pytestmark = pytest.mark.anyio

FAST = {"initial": 0.02, "maximum": 0.2, "stable_after": 1.0}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the websockets client is asyncio only


class Recording:
    """A policy of our own (what ``policy=`` accepts), deciding as the default ``Backoff``
    does and remembering every disconnect it was asked about."""

    def __init__(self, **kwargs: Any) -> None:
        self.backoff = Backoff(**{**FAST, **kwargs})
        self.seen: list[Disconnect] = []

    def next_delay(self, disconnect: Disconnect) -> float | None:
        self.seen.append(disconnect)
        return self.backoff.next_delay(disconnect)

    def is_stable(self, uptime: float) -> bool:
        return self.backoff.is_stable(uptime)


@pytest.fixture
def app_server(serve: Callable[..., RunningServer]) -> tuple[RunningServer, Counter[str]]:
    seen: Counter[str] = Counter()
    return serve(make_app(RoomManager(), seen), lifespan="on"), seen


async def collect(client: ResilientClient, into: list[Any]) -> None:
    """Every message but the server's ``joined`` announcements."""
    async for message in client:
        if not (isinstance(message, dict) and message.get("type") == "joined"):
            into.append(message)


async def give_up(url: str, **options: Any) -> tuple[ResilientClient, ClientGaveUp]:
    """Run a client until it gives up; the client and what it raised."""
    async with ResilientClient(url, **options) as client:
        with pytest.raises(ClientGaveUp) as gave_up:
            await collect(client, [])
    return client, gave_up.value


async def test_a_server_that_drops_at_once_is_backed_off_not_hammered(
    app_server: tuple[RunningServer, Counter[str]],
) -> None:
    server, seen = app_server
    policy = Recording(max_failures=5)
    _client, given_up = await give_up(f"{server.url}/drop", token="good", policy=policy)
    failures = [d.failures for d in policy.seen]
    assert failures == [1, 2, 3, 4, 5]  # each connection was up too briefly to reset
    assert [d.code for d in policy.seen] == [1011] * 5
    assert seen["/drop"] == 5
    assert given_up.attempts == 5 and given_up.code == 1011
    assert "after 5 failure(s)" in str(given_up)


async def test_a_policy_close_is_not_retried(
    app_server: tuple[RunningServer, Counter[str]],
) -> None:
    server, seen = app_server
    client, given_up = await give_up(f"{server.url}/ws/a", token="wrong", policy=Recording())
    with pytest.raises(ClientGaveUp):
        await client.send("too late")
    assert given_up.code == 1008
    assert client.attempts == 1
    assert seen["/ws/a"] == 0  # the app never saw the unauthenticated socket


@pytest.mark.parametrize("code", [1000, 1001, 1012, 4000])
async def test_every_close_code_reaches_the_policy(
    app_server: tuple[RunningServer, Counter[str]], code: int
) -> None:
    server, _ = app_server
    policy = Recording(max_failures=1)
    _client, given_up = await give_up(f"{server.url}/close/{code}", token="good", policy=policy)
    assert [d.code for d in policy.seen] == [code]
    assert given_up.code == code


async def test_a_raising_token_function_is_a_failed_attempt_not_a_crash(
    app_server: tuple[RunningServer, Counter[str]],
) -> None:
    server, _ = app_server

    async def token() -> str:
        raise RuntimeError("token endpoint down")

    policy = Recording(max_failures=2)
    client, given_up = await give_up(f"{server.url}/ws/a", token=token, policy=policy)
    assert client.attempts == 2
    assert "token endpoint down" in policy.seen[-1].reason
    assert "token endpoint down" in given_up.reason


async def test_no_server_gives_up_after_max_failures() -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws/a"
    _client, given_up = await give_up(url, policy=Recording(max_failures=3))
    assert given_up.attempts == 3 and given_up.code == 1006


async def test_sends_while_disconnected_wait_in_a_bounded_outbox() -> None:
    port = free_port()
    client = ResilientClient(f"ws://127.0.0.1:{port}/ws/a", token="good", outbox_size=3,
                             policy=Recording())  # fmt: skip
    async with client:
        for i in range(3):
            await client.send(f"early {i}")
        with pytest.raises(OutboxFull):
            await client.send("one too many")
        rooms = RoomManager()
        server = RunningServer(make_app(rooms), lifespan="on", port=port)
        server.start()
        try:
            got: list[Any] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(collect, client, got)
                await await_for(lambda: len(got) == 3, what="the flushed outbox, echoed")
                tg.cancel_scope.cancel()
        finally:
            server.stop()
    assert [m["data"] for m in got] == ["early 0", "early 1", "early 2"]


async def test_every_connect_authenticates_and_a_token_function_is_asked_each_time(
    app_server: tuple[RunningServer, Counter[str]],
) -> None:
    server, _ = app_server
    asked = 0

    async def token() -> str:
        nonlocal asked
        asked += 1
        return "good"

    async with ResilientClient(f"{server.url}/drop", token=token,
                               policy=Recording(max_failures=3)) as client:  # fmt: skip
        with pytest.raises(ClientGaveUp):
            await collect(client, [])
    assert asked == 3 and client.connects == 3


async def test_app_level_pings_are_answered_so_the_heartbeat_keeps_the_connection(
    serve: Callable[..., RunningServer],
) -> None:
    rooms = RoomManager(heartbeat=Heartbeat(interval=0.05, timeout=0.2))
    server = serve(make_app(rooms), lifespan="on")
    async with ResilientClient(f"{server.url}/ws/r", token="good", policy=Recording()) as client:
        await await_for(lambda: client.connected, what="the connection")
        (conn,) = rooms
        since = conn.last_seen
        # the client sends nothing of its own: only its pongs move last_seen
        await await_for(lambda: conn.last_seen > since + 0.5, what="pongs for 0.5 s")
        assert client.connects == 1 and conn.state == "open"
    assert rooms.stats().heartbeat_timeouts == 0


def test_publications_at_or_below_the_last_seq_are_dropped() -> None:
    """What makes a replay that overlaps live delivery exactly-once for the consumer."""
    client = ResilientClient("ws://unused")
    assert client._first_time({"type": "joined", "room": "r", "seq": 4, "epoch": "e"})
    assert not client._first_time({"room": "r", "seq": 4, "data": "old"})
    assert client._first_time({"room": "r", "seq": 5, "data": "new"})
    assert not client._first_time({"room": "r", "seq": 5, "data": "new"})
    assert (client.positions, client.epochs) == ({"r": 5}, {"r": "e"})
    assert client._first_time({"type": "recovery_failed", "room": "r", "reason": "trimmed"})
    assert client._first_time({"room": "r", "seq": 1, "data": "renumbered"})


def test_a_new_epoch_is_a_new_numbering_and_recovery_failed_names_the_position() -> None:
    client = ResilientClient("ws://unused")
    assert client._first_time({"room": "r", "seq": 50, "epoch": "e1", "data": "old"})
    notice = {"type": "recovery_failed", "room": "r", "reason": "epoch changed", "seq": 0,
              "epoch": "e2"}  # fmt: skip
    assert client._first_time(notice)
    assert (client.positions, client.epochs) == ({"r": 0}, {"r": "e2"})
    assert client._first_time({"room": "r", "seq": 1, "epoch": "e2", "data": "new"})
    assert not client._first_time({"room": "r", "seq": 1, "epoch": "e2", "data": "new"})
    assert client._first_time({"room": "r", "seq": 3, "epoch": "e3", "data": "renumbered"})
    assert (client.positions, client.epochs) == ({"r": 3}, {"r": "e3"})


def test_full_jitter_stays_under_the_capped_exponential() -> None:
    policy = Backoff(initial=1, maximum=8, rng=random.Random(7))
    caps = [policy.cap(n) for n in range(1, 7)]
    assert caps == [1, 2, 4, 8, 8, 8]
    for failures in range(1, 7):
        delays = [policy.next_delay(Disconnect(1006, "", failures, 0)) for _ in range(200)]
        assert all(d is not None and 0 <= d <= policy.cap(failures) for d in delays)
        assert max(d for d in delays if d is not None) > policy.cap(failures) * 0.9  # spread


def test_policy_decisions() -> None:
    policy = Backoff(max_failures=4)
    assert policy.next_delay(Disconnect(1008, "auth", 1, 0)) is None
    assert policy.next_delay(Disconnect(None, "", 1, 0, status=401)) is None
    assert policy.next_delay(Disconnect(None, "", 1, 0, status=503)) is not None
    assert policy.next_delay(Disconnect(1012, "", 4, 0)) is None
    assert policy.is_stable(10.0) and not policy.is_stable(9.9)
    for bad in ({"initial": 0}, {"initial": 5, "maximum": 1}, {"multiplier": 0.5},
                {"max_failures": 0}, {"stable_after": -1}):  # fmt: skip
        with pytest.raises(ValueError, match=r"must be|need"):
            Backoff(**bad)  # type: ignore[arg-type]


def test_since_query_resumes_the_one_room() -> None:
    assert since_query("ws://h/ws/a?x=1", {}, {}) == "ws://h/ws/a?x=1"
    assert since_query("ws://h/ws/a?x=1&since=2", {"a": 7}, {}) == "ws://h/ws/a?x=1&since=7"
    assert since_query("ws://h/ws/a?since=2&epoch=old", {"a": 7}, {"a": "new"}) == (
        "ws://h/ws/a?since=7&epoch=new"
    )
    assert since_query("ws://h/ws/a", {"a": 1, "b": 2}, {}) == "ws://h/ws/a"


@pytest.fixture
def restartable(redis_server: RedisServer) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start (and restart) ``tests._rooms_app`` on one port with the Redis backplane."""
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        env = {"ASGI_RT_TEST_BACKEND": redis_server.url, "ASGI_RT_TEST_AUTH": "1",
               "PATH": "/usr/bin:/bin"}  # fmt: skip
        procs.append(spawn_uvicorn("tests._rooms_app:app", port, env=env))
        return procs[-1]

    start.port = port
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.mark.server
@pytest.mark.timeout(90)
async def test_server_restart_mid_stream_loses_and_repeats_nothing(
    restartable: Callable[[], subprocess.Popen[bytes]], redis_server: RedisServer
) -> None:
    port = restartable.port
    server = restartable()
    await await_for(lambda: listening(port), 20, "uvicorn")
    total, got = 300, []
    publisher = RoomManager(backend=redis_server.url)
    policy = Recording()
    async with publisher, ResilientClient(f"ws://127.0.0.1:{port}/ws/live", token="good",
                                          policy=policy) as client:  # fmt: skip

        async def publish_all() -> None:
            for i in range(total):
                await publisher.publish("live", i)
                await anyio.sleep(0.002)  # a steady stream, not one burst

        async with anyio.create_task_group() as tg:
            tg.start_soon(collect, client, got)
            await await_for(lambda: client.connected, 10, "the first connection")
            tg.start_soon(publish_all)
            await await_for(lambda: len(got) >= 50, 20, "the stream to flow")
            server.send_signal(signal.SIGTERM)  # uvicorn closes every socket with 1012
            assert server.wait(20) in {0, -signal.SIGTERM}
            server = restartable()
            await await_for(lambda: len(got) >= total, 40, "every message")
            tg.cancel_scope.cancel()
    assert [m["data"] for m in got] == list(range(total))
    assert [m["seq"] for m in got] == list(range(1, total + 1))
    assert client.connects >= 2
    assert list(client.epochs) == ["live"]  # announced by the server, sent back on reconnect
    assert 1012 in [d.code for d in policy.seen] or None in [d.code for d in policy.seen]


async def test_a_frame_too_deep_to_decode_arrives_as_text_and_bad_data_is_refused_at_send(
    serve: Callable[..., RunningServer],
) -> None:
    deep = "[" * 1500 + "]" * 1500

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": deep})
        await send({"type": "websocket.send", "text": '{"after": 1}'})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    server = serve(app)
    async with ResilientClient(f"{server.url}/ws", policy=Recording()) as client:
        messages = aiter(client)
        assert await anext(messages) == deep  # as invalid JSON is: the text, not a crash
        assert await anext(messages) == {"after": 1}
        with pytest.raises(ValueError, match=r"nan \(JSON has no NaN or Infinity\) at \$\['x'\]"):
            await client.send({"x": float("nan")})
        with pytest.raises(ValueError, match="surrogates not allowed"):
            await client.send("bad \ud800")


@pytest.mark.server
@pytest.mark.timeout(90)
async def test_a_restart_that_lost_the_history_is_told_not_taken_as_a_continuation() -> None:
    """The memory backend loses everything with the server. The client saw 1..50, the
    restarted server numbers 80 new publications 1..80 before the client is back: resuming
    with since=50 must not take 51..80 as the rest (50 lost silently); the client is told,
    then gets all 80."""
    port = free_port()
    env = {"ASGI_RT_TEST_AUTH": "1", "PATH": "/usr/bin:/bin"}
    server = spawn_uvicorn("tests._rooms_app:app", port, env=env)
    got: list[Any] = []
    try:
        await await_for(lambda: listening(port), 20, "uvicorn")
        async with ResilientClient(f"ws://127.0.0.1:{port}/ws/r", token="good") as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(collect, client, got)
                await await_for(lambda: client.connected, 10, "the first connection")
                await _publish_through(port, [f"old-{i}" for i in range(50)])
                await await_for(lambda: len(got) >= 50, 20, "the first 50")
                server.kill()
                server.wait(10)
                server = spawn_uvicorn("tests._rooms_app:app", port, env=env)
                await await_for(lambda: listening(port), 20, "uvicorn again")
                await _publish_through(port, [f"new-{i}" for i in range(80)])
                await await_for(lambda: len(got) >= 131, 30, "the notice and the 80")
                tg.cancel_scope.cancel()
    finally:
        server.kill()
        server.wait(10)
    old, notice, new = got[:50], got[50], got[51:]
    assert [m["data"] for m in old] == [f"old-{i}" for i in range(50)]
    assert (notice["type"], notice["reason"], notice["seq"]) == (
        "recovery_failed",
        "epoch changed",
        0,
    )
    assert [m["data"] for m in new] == [f"new-{i}" for i in range(80)]
    assert notice["epoch"] == new[0]["epoch"] != old[0]["epoch"]


async def _publish_through(port: int, texts: list[str]) -> None:
    """Publish through the app itself (the memory backend lives in the server)."""
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/r") as ws:
        await ws.send('{"type":"auth","token":"good"}')
        while json.loads(await ws.recv())["type"] != "joined":
            pass
        for text in texts:
            await ws.send(text)
        for _ in texts:
            await ws.recv()  # published: each comes back
