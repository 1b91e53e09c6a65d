"""One lightweight worker of ``bench.cluster``'s scale experiment: subscribes its rooms,
says ``ready``, counts what arrives until it has ``expected`` messages (or 10 s pass with
nothing), and prints ``{"node": deliveries}`` as one JSON line.

Modes: ``spublish`` (``RedisClusterBackend``: one sharded connection per owning node),
``publish-rooms`` (one plain connection to node ``node``, ``SUBSCRIBE`` per room) and
``publish-one`` (one plain connection, ``SUBSCRIBE`` to one shared channel, filtering
locally: what single-channel adapters do).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from typing import Any

import redis.asyncio as aioredis

from asgi_rt.backends import Publication
from asgi_rt.backends.redis_cluster import RedisClusterBackend


async def sharded(cfg: dict[str, Any]) -> Counter[str]:
    counts: Counter[str] = Counter()
    async with RedisClusterBackend(cfg["seeds"]) as backend:
        for room in cfg["rooms"]:
            await backend.subscribe(room)
        while not backend.listener_up:  # noqa: ASYNC110  (a flag, no event to wait on)
            await asyncio.sleep(0.05)
        print("ready", flush=True)
        stream = backend.publications()
        while sum(counts.values()) < cfg["expected"]:
            item = await asyncio.wait_for(anext(stream), 10)
            if isinstance(item, Publication):
                owner = backend.topology.owner(f"asgi_rt:{{{item.channel}}}:seq")
                counts[str(owner)] += 1
    return counts


async def plain(cfg: dict[str, Any]) -> Counter[str]:
    counts: Counter[str] = Counter()
    host, _, port = cfg["node"].rpartition(":")
    client = aioredis.Redis(host=host, port=int(port))
    pubsub = client.pubsub()
    channels = ["bench:all"] if cfg["mode"] == "publish-one" else cfg["rooms"]
    for i in range(0, len(channels), 500):
        await pubsub.subscribe(*channels[i : i + 500])
    confirmed = 0
    while confirmed < len(channels):
        message = await pubsub.get_message(timeout=5)
        confirmed += message is not None and message["type"] == "subscribe"
    print("ready", flush=True)
    received = 0
    while received < cfg["expected"]:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=10)
        if message is None:
            break
        received += 1
    counts[cfg["node"]] = received
    await pubsub.aclose()
    await client.aclose()
    return counts


def main() -> None:
    cfg = json.loads(sys.argv[1])
    counts = asyncio.run(sharded(cfg) if cfg["mode"] == "spublish" else plain(cfg))
    print(json.dumps(dict(counts)), flush=True)


if __name__ == "__main__":
    main()
