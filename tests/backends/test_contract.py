"""One contract, every backend: the memory backend (asyncio and trio), Redis, Redis Cluster
and NATS JetStream (asyncio)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import pytest

from asgi_rt.backends import Backend, HistoryGap, MemoryBackend, Publication
from asgi_rt.backends.base import PresenceStore

from .._nats import NatsServer
from .._poll import await_for, await_true
from .._redis import RedisServer
from .._redis_cluster import RedisClusterServers

pytestmark = pytest.mark.anyio

Factory = Callable[[int], Backend]


# (backplane, event loop): the network backplanes are asyncio-only, so their trio cases
# are not generated at all (rather than generated and skipped)
CASES = [("memory", "asyncio"), ("memory", "trio"), ("redis", "asyncio"),
         ("redis-cluster", "asyncio"), ("nats", "asyncio")]  # fmt: skip


@pytest.fixture(params=CASES, ids=[f"{kind}-{loop}" for kind, loop in CASES])
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    kind, loop = request.param
    return str(kind), str(loop)


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> str:
    return case[1]


@pytest.fixture
def make(request: pytest.FixtureRequest, case: tuple[str, str]) -> Factory:
    kind = case[0]
    if kind == "memory":
        return lambda history: MemoryBackend(history_size=history)
    if kind == "redis-cluster":
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        cluster.flushall()  # one cluster for the session: every test starts from empty rooms
        from asgi_rt.backends.redis_cluster import RedisClusterBackend

        return lambda history: RedisClusterBackend.from_url(cluster.url, history_size=history)
    if kind == "nats":
        from asgi_rt.backends.nats import NatsBackend

        nats: NatsServer = request.getfixturevalue("nats_server")
        prefix = f"t{uuid.uuid4().hex[:8]}"  # one server per module: a stream per test
        return lambda history: NatsBackend(nats.url, history_size=history, prefix=prefix)
    server: RedisServer = request.getfixturevalue("redis_server")
    from asgi_rt.backends.redis import RedisBackend

    return lambda history: RedisBackend.from_url(server.url, history_size=history)


@asynccontextmanager
async def started(make: Factory, history: int = 100) -> AsyncIterator[Backend]:
    async with make(history) as backend:
        yield backend


async def take(backend: Backend, count: int) -> list[Publication]:
    """The next ``count`` publications; ``Resync`` notices (a backend sends one when its
    subscriptions went live after they were asked for) are a consumer's to act on, not
    publications."""
    out: list[Publication] = []
    with anyio.fail_after(10):
        async for item in backend.publications():
            if isinstance(item, Publication):
                out.append(item)
            if len(out) == count:
                break
    return out


async def subscribed(backend: Backend, channel: str) -> None:
    await backend.subscribe(channel)
    await await_for(lambda: getattr(backend, "listener_up", True), what="the listener")
    await backend.subscribe(channel)  # idempotent; now surely on the live connection


async def test_publications_arrive_once_in_order_with_seq(make: Factory) -> None:
    async with started(make) as backend:
        await subscribed(backend, "room")
        sent = [await backend.publish("room", f"m{i}".encode()) for i in range(20)]
        got = await take(backend, 20)
    assert [p.seq for p in sent] == list(range(1, 21))
    assert [(p.channel, p.seq, p.data) for p in got] == [("room", i, f"m{i - 1}".encode())
                                                          for i in range(1, 21)]  # fmt: skip
    assert len({p.epoch for p in got}) == 1


async def test_unsubscribed_channels_are_not_delivered(make: Factory) -> None:
    async with started(make) as backend:
        await subscribed(backend, "a")
        await backend.publish("b", b"not for us")
        await backend.publish("a", b"for us")
        (got,) = await take(backend, 1)
    assert got.channel == "a"


async def test_history_replays_after_since(make: Factory) -> None:
    async with started(make) as backend:
        for i in range(10):
            await backend.publish("room", str(i).encode())
        missed = await backend.history("room", 6)
        assert [p.seq for p in missed] == [7, 8, 9, 10]
        assert await backend.history("room", 10) == []


async def test_history_refuses_trimmed_positions_and_foreign_epochs(make: Factory) -> None:
    async with started(make, history=5) as backend:
        last = None
        for i in range(200):
            last = await backend.publish("room", str(i).encode())
        assert last is not None
        with pytest.raises(HistoryGap) as trimmed:
            await backend.history("room", 1)
        assert trimmed.value.reason == "trimmed"
        with pytest.raises(HistoryGap) as foreign:
            await backend.history("room", 199, epoch="not-" + last.epoch)
        assert foreign.value.reason == "epoch changed"
        with pytest.raises(HistoryGap) as ahead:
            await backend.history("room", 500)
        assert ahead.value.reason == "unknown position"
        assert [p.seq for p in await backend.history("room", 198, epoch=last.epoch)] == [199, 200]


async def test_presence_entries_expire_unless_refreshed(make: Factory) -> None:
    async with started(make) as backend:
        assert isinstance(backend, PresenceStore)
        await backend.presence_add("room", "a", b'{"id":"a"}', ttl=30)
        await backend.presence_add("room", "b", b'{"id":"b"}', ttl=0.2)
        assert set(await backend.presence("room")) == {"a", "b"}

        async def only_a() -> bool:
            return await backend.presence("room") == {"a": b'{"id":"a"}'}

        await await_true(only_a, 5, "b's entry to expire", interval=0.05)
        await backend.presence_remove("room", "a")
        assert await backend.presence("room") == {}


async def test_position_is_the_last_seq_and_epoch(make: Factory) -> None:
    from asgi_rt.backends import PositionStore

    async with started(make) as backend:
        assert isinstance(backend, PositionStore)
        seq, epoch = await backend.position("room")  # the first join: the room gets an epoch
        assert seq == 0 and epoch
        for i in range(3):
            last = await backend.publish("room", f"m{i}".encode())
        assert last.epoch == epoch  # a client that joined before the first publish resumes
        assert await backend.position("room") == (3, epoch)


async def test_a_repeated_idempotency_key_applies_once(make: Factory) -> None:
    async with started(make) as backend:
        await subscribed(backend, "room")
        first = await backend.publish("room", b"once", idempotency_key="k")
        again = await backend.publish("room", b"once", idempotency_key="k")
        other = await backend.publish("room", b"twice", idempotency_key="k2")
        got = await take(backend, 2)
    assert again == first
    assert [(p.seq, p.data) for p in got] == [(1, b"once"), (2, b"twice")]
    assert other.seq == 2


async def test_idempotency_keys_of_different_rooms_never_collide(make: Factory) -> None:
    """``key "msg-7" in room "chat:42"`` and ``key "msg-7:chat" in room "42"`` are two
    publishes; one used to be answered with the other's position and never applied."""
    async with started(make) as backend:
        await backend.publish("chat:42", b"first", idempotency_key="msg-7")
        second = await backend.publish("42", b"second", idempotency_key="msg-7:chat")
        assert (second.channel, second.seq) == ("42", 1)
        assert [p.data for p in await backend.history("42", 0)] == [b"second"]


@pytest.mark.parametrize(
    ("bad", "says"),
    [({"history_size": -1}, "history_size must be >= 0, got -1"),
     ({"buffer": 0}, "buffer must be >= 1, got 0"),
     ({"room_ttl": 0}, "room_ttl must be > 0, got 0"),
     ({"publish_timeout": -1}, "publish_timeout must be > 0, got -1")],
)  # fmt: skip
def test_every_networked_backend_names_the_bad_option(bad: dict[str, float], says: str) -> None:
    from asgi_rt.backends.nats import NatsBackend
    from asgi_rt.backends.redis import RedisBackend
    from asgi_rt.backends.redis_cluster import RedisClusterBackend

    for make_one in (lambda: RedisBackend.from_url("redis://127.0.0.1:1/0", **bad),
                     lambda: RedisClusterBackend(["127.0.0.1:1"], **bad),
                     lambda: NatsBackend("nats://127.0.0.1:1", **bad)):  # fmt: skip
        with pytest.raises(ValueError, match=says):
            make_one()
