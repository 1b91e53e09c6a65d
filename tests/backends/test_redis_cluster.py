"""RedisClusterBackend against a real 3-master cluster: what each node carries, and a
master that crashes and restarts empty under a subscribed backend."""

from __future__ import annotations

import asyncio
import signal

import pytest

from asgi_rt.backends import Publication, PublishNotApplied, Resync
from asgi_rt.backends.redis_cluster import RedisClusterBackend

from .._poll import await_for
from .._redis_cluster import RedisClusterServers

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def test_one_sharded_connection_per_node_carries_only_its_rooms(
    redis_cluster: RedisClusterServers,
) -> None:
    rooms = [f"room-{i}" for i in range(30)]
    async with RedisClusterBackend.from_url(redis_cluster.url) as backend:
        for room in rooms:
            await backend.subscribe(room)
        await await_for(lambda: backend.listener_up, 20, "every room live")
        for node in redis_cluster.nodes:
            pubsub_clients = _text(node.command("CLIENT", "LIST", "TYPE", "pubsub"))
            channels = {_text(c) for c in node.command("PUBSUB", "SHARDCHANNELS")}
            owned = {r for r in rooms if redis_cluster.owner_of(f"asgi_rt:{{{r}}}:seq") is node}
            assert len(pubsub_clients.splitlines()) == 1, pubsub_clients
            assert channels == {f"asgi_rt:{{{r}}}:pub" for r in owned}


async def test_a_restarted_master_is_resubscribed_with_a_resync(
    redis_cluster: RedisClusterServers,
) -> None:
    owner = redis_cluster.owner_of("asgi_rt:{restart}:seq")
    try:
        async with RedisClusterBackend.from_url(redis_cluster.url) as backend:
            await backend.subscribe("restart")
            await await_for(lambda: backend.listener_up, 20, "the room live")
            before = await backend.publish("restart", b"before")
            owner.kill(signal.SIGKILL)
            await await_for(lambda: not backend.listener_up, 20, "the crash seen")
            with pytest.raises(PublishNotApplied, match="not applied"):
                await backend.publish("restart", b"during")
            owner.start()  # same port and node id, every key gone
            await asyncio.to_thread(redis_cluster.wait_ok)
            items: list[Publication | Resync] = []
            async with asyncio.timeout(30):
                async for item in backend.publications():
                    items.append(item)
                    if isinstance(item, Resync):
                        break
            assert items == [before, Resync(("restart",))]
            await await_for(lambda: backend.listener_up, 20, "the room live again")
            after = await backend.publish("restart", b"after")
            assert (after.seq, after.epoch != before.epoch) == (1, True)
            async with asyncio.timeout(10):
                assert await anext(aiter(backend.publications())) == after
    finally:
        if owner.proc is None:
            owner.start()
        redis_cluster.wait_ok()  # the next test gets a whole cluster
