"""Which Redis Cluster node owns which hash slot, and one waiting pool per node.

A small routing table of our own rather than redis-py's ``RedisCluster``: the backend must
see every failure (a publish never retried, a listener that never resubscribes silently),
and redis-py's cluster client retries, re-routes and resubscribes inside itself.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._redis_common import text, without_retries
from .base import BackendUnavailable

__all__ = ["Topology", "parse_seeds"]

logger = logging.getLogger("asgi_rt.backends.redis_cluster")


def parse_seeds(url: str) -> list[str]:
    """``redis-cluster://h1:p1,h2:p2`` as ``["h1:p1", "h2:p2"]``.

    Raises:
        ValueError: not a ``redis-cluster://`` URL, or a node without ``host:port``.
    """
    scheme, sep, rest = url.partition("://")
    if scheme != "redis-cluster" or not sep:
        raise ValueError(f"expected redis-cluster://host:port[,host:port...], got {url!r}")
    seeds = [s.strip() for s in rest.split("/")[0].split(",") if s.strip()]
    for seed in seeds:
        host, _, port = seed.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected host:port in {url!r}, got {seed!r}")
    if not seeds:
        raise ValueError(f"no node in {url!r}: expected redis-cluster://host:port[,...]")
    return seeds


class Topology:
    """The slot table (loaded with ``CLUSTER SLOTS``) and a client per master node.

    Each node's pool holds at most ``max_connections`` and makes a caller wait for one, at
    most ``timeout`` seconds; a command other than a publish is retried once on a fresh
    connection (a restarted node's pooled connections are dead).
    """

    def __init__(self, seeds: list[str], *, max_connections: int, timeout: float) -> None:
        self.seeds = seeds
        self.max_connections = max_connections
        self.timeout = timeout
        self._owner: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        self._clients: dict[str, aioredis.Redis] = {}
        self._listener_clients: dict[str, aioredis.Redis] = {}

    def owner(self, key: str) -> str | None:
        """The ``host:port`` of the master that owns ``key``'s slot, if known."""
        return self._owner[key_slot(key.encode())]

    def masters(self) -> set[str]:
        return {addr for addr in self._owner if addr is not None}

    def client(self, addr: str) -> aioredis.Redis:
        if addr not in self._clients:
            host, _, port = addr.rpartition(":")
            pool = aioredis.BlockingConnectionPool(
                host=host, port=int(port), max_connections=self.max_connections,
                timeout=self.timeout, retry=Retry(NoBackoff(), 1),
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
            )  # fmt: skip
            self._clients[addr] = aioredis.Redis.from_pool(pool)
        return self._clients[addr]

    def listener_client(self, addr: str) -> aioredis.Redis:
        """A client on ``addr`` that never retries by itself (see ``without_retries``)."""
        if addr not in self._listener_clients:
            self._listener_clients[addr] = without_retries(self.client(addr), 2)
        return self._listener_clients[addr]

    async def refresh(self) -> None:
        """Reload the slot table from the first node that answers (known masters first).

        Raises:
            BackendUnavailable: no node answered ``CLUSTER SLOTS`` within ``timeout``.
        """
        errors: list[str] = []
        for addr in [*sorted(self.masters()), *self.seeds]:
            client: Any = self.client(addr)
            try:
                with anyio.fail_after(self.timeout):
                    reply = await client.execute_command("CLUSTER", "SLOTS")
            except (RedisError, OSError, TimeoutError) as exc:
                errors.append(f"{addr}: {exc!r}")
                continue
            self._load(reply)
            return
        raise BackendUnavailable(f"no Redis Cluster node answered CLUSTER SLOTS: {errors}")

    def _load(self, reply: Any) -> None:
        owner: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        ranges = reply.items() if isinstance(reply, dict) else (
            ((r[0], r[1]), {"primary": (r[2][0], r[2][1])}) for r in reply
        )  # fmt: skip
        for (start, end), nodes in ranges:
            host, port = nodes["primary"][:2]
            addr = f"{text(host) or '127.0.0.1'}:{int(port)}"
            for slot in range(int(start), int(end) + 1):
                owner[slot] = addr
        self._owner = owner

    async def aclose(self) -> None:
        for client in [*self._listener_clients.values(), *self._clients.values()]:
            await client.aclose()
        self._clients.clear()
        self._listener_clients.clear()
