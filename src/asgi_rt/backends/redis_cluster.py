"""RedisClusterBackend: rooms sharded over a Redis Cluster (the ``redis`` extra, Redis >= 7).

asyncio only (redis-py's asyncio client). Every key of a room carries the room as its hash
tag (``asgi_rt:{room}:seq``, ``...:stream``, ``...:pub``), so a room lives on one slot of
one master, and one Lua call there numbers the publication, appends it to the room's
Stream and ``SPUBLISH``es it, atomically, as on a single Redis. A sharded publication is
sent only by the node that owns the room, and only to the processes that ``SSUBSCRIBE``d
to it: a node's work per publish does not grow with the number of nodes or workers.

Each process holds one sharded subscription connection per master that owns at least one
room it has members in, not one per room. When that connection fails (a node restart, a
failover, a network fault) the listener logs a WARNING, reloads the slot table, reconnects
with capped exponential backoff and full jitter and resubscribes its rooms, wherever they
now live, and emits :class:`Resync` for them, so members are repaired from history or told
``recovery_failed`` exactly as with :class:`~asgi_rt.backends.redis.RedisBackend`. The
slot table is also reloaded after a ``MOVED`` reply and every ``topology_interval`` s, so
rooms follow a resharding.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import anyio
from redis.exceptions import RedisError, ResponseError

from .._background import Background
from ._cluster_listener import Naming, ShardedListener
from ._cluster_topology import Topology, parse_seeds
from ._redis_common import (
    POSITION,
    publish_call,
    publish_once,
    publish_script,
    stream_publications,
    text,
)
from .base import (
    BackendUnavailable,
    Publication,
    PublishNotApplied,
    Resync,
    check_history,
    check_options,
)

__all__ = ["RedisClusterBackend"]

logger = logging.getLogger("asgi_rt.backends.redis_cluster")

_PUBLISH = publish_script("SPUBLISH")


class RedisClusterBackend:
    """Sharded pub/sub, sequence numbers and Stream history on a Redis Cluster.

    Args:
        seeds: ``host:port`` of one or more cluster nodes; the others are discovered.
        history_size: publications kept per room (approximately: ``MAXLEN ~``).
        prefix: key prefix for every key and channel this backend touches.
        buffer: publications the local listeners may hold before they stop reading.
        publish_timeout: seconds before a call fails with ``BackendUnavailable``.
        max_backoff: cap of a node listener's reconnect backoff, in seconds.
        ping_interval: idle seconds after which a node listener PINGs its connection.
        ping_timeout: seconds without the PONG before the connection counts as dead.
        on_listener_state: ``hook(up: bool)``: up when every subscribed room is live.
        room_ttl: seconds a room's keys live after its last publish or join.
        idempotency_ttl: seconds a publish's ``idempotency_key`` is remembered.
        max_connections: per node, connections for publishes and history (callers wait).
        topology_interval: seconds between slot table reloads when nothing else asks.

    Publish errors mean what they mean for ``RedisBackend``: :class:`PublishNotApplied`
    when it never ran (no connection, or the node refused it: ``MOVED`` during a
    resharding, ``CLUSTERDOWN`` while a master is down), :class:`PublishOutcomeUnknown`
    when it was sent and no answer came. A publish that met ``MOVED`` is tried once more
    on the new owner (it did not run, so that cannot apply it twice).
    """

    def __init__(
        self,
        seeds: list[str],
        *,
        history_size: int = 1000,
        prefix: str = "asgi_rt:",
        buffer: int = 10_000,
        publish_timeout: float = 2.0,
        max_backoff: float = 0.5,
        ping_interval: float = 3.0,
        ping_timeout: float = 2.0,
        on_listener_state: Callable[[bool], None] | None = None,
        room_ttl: float = 3600.0,
        idempotency_ttl: float = 300.0,
        max_connections: int = 64,
        topology_interval: float = 5.0,
    ) -> None:
        check_options(history_size=history_size, buffer=buffer, room_ttl=room_ttl,
                      idempotency_ttl=idempotency_ttl, publish_timeout=publish_timeout,
                      max_backoff=max_backoff, topology_interval=topology_interval)  # fmt: skip
        if max_connections < 1 or not seeds:
            raise ValueError(f"max_connections >= 1 and a seed node are required, got "
                             f"{max_connections}, {seeds!r}")  # fmt: skip
        self.topology = Topology(seeds, max_connections=max_connections, timeout=publish_timeout)
        self.history_size = history_size
        self.prefix = prefix
        self.publish_timeout = publish_timeout
        self.max_backoff = max_backoff
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.on_listener_state = on_listener_state
        self.room_ttl = room_ttl
        self.idempotency_ttl = idempotency_ttl
        self.topology_interval = topology_interval
        self._naming = Naming(prefix)
        self._send, self._receive = anyio.create_memory_object_stream[Publication | Resync](buffer)
        self._listener = ShardedListener(
            self.topology, self._naming, self._send, max_backoff=max_backoff,
            ping_interval=ping_interval, ping_timeout=ping_timeout, interval=topology_interval,
            on_state=on_listener_state,
        )  # fmt: skip
        self._script: Any = None
        self._position_script: Any = None
        self._background = Background()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisClusterBackend:
        """``redis-cluster://host:port[,host:port...]``: any reachable nodes as seeds.

        Raises:
            ValueError: a malformed URL.
        """
        return cls(parse_seeds(url), **options)

    async def __aenter__(self) -> Self:
        try:
            await self.topology.refresh()
        except BackendUnavailable as exc:
            await self.topology.aclose()
            raise BackendUnavailable(f"{exc}; is the cluster running there? (check the "
                                     f"URL)") from exc.__cause__  # fmt: skip
        any_client = self.topology.client(self.topology.seeds[0])
        self._script = any_client.register_script(_PUBLISH)  # its sha; run on each node
        self._position_script = any_client.register_script(POSITION)
        await self._background.start(self._listener.run)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        await self._background.stop()
        self._send.close()
        self._receive.close()
        await self.topology.aclose()

    async def publish(
        self, channel: str, data: bytes, *, idempotency_key: str | None = None
    ) -> Publication:
        keys, args = publish_call(
            self._key, channel, data, idempotency_key, history_size=self.history_size,
            room_ttl=self.room_ttl, idempotency_ttl=self.idempotency_ttl,
        )  # fmt: skip
        try:
            reply = await self._publish_on_owner(keys, args, channel)
        except PublishNotApplied as exc:
            if not _moved(exc.__cause__):
                raise
            await self._reroute()
            reply = await self._publish_on_owner(keys, args, channel)  # it did not run
        seq, epoch, _ = reply
        return Publication(channel, int(seq), text(epoch), data)

    async def _publish_on_owner(self, keys: list[str], args: list[Any], channel: str) -> Any:
        addr = self.topology.owner(keys[0])
        if addr is None:
            await self._reroute()
            addr = self.topology.owner(keys[0])
            if addr is None:
                raise PublishNotApplied(f"publish to {channel!r} was not applied: no "
                                        "cluster node owns its slot")  # fmt: skip
        pool: Any = self.topology.client(addr).connection_pool
        try:
            return await publish_once(pool, self._script, keys, args, channel,
                                      self.publish_timeout)  # fmt: skip
        except PublishNotApplied as exc:
            if not _moved(exc.__cause__):
                self._listener.wake()  # the node may have failed over: reload the slot table
            raise

    async def subscribe(self, channel: str) -> None:
        await self._listener.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self._listener.unsubscribe(channel)

    @property
    def listener_up(self) -> bool:
        """Every subscribed room is live on its node's connection."""
        return self._listener.up

    @property
    def reconnects(self) -> int:
        """How many times a node's subscription connection was lost."""
        return self._listener.reconnects

    def publications(self) -> AsyncIterator[Publication | Resync]:
        if self._script is None:
            raise RuntimeError("RedisClusterBackend is not started: use it as 'async with'")
        return self._receive

    async def position(self, channel: str) -> tuple[int, str | None]:
        keys = [self._key(channel, "seq"), self._key(channel, "epoch"),
                self._key(channel, "stream")]  # fmt: skip
        args = [uuid.uuid4().hex[:12], int(self.room_ttl * 1000)]
        seq, epoch = await self._on_owner(
            channel, lambda c: self._position_script(keys=keys, args=args, client=c),
            f"position of {channel!r}",
        )  # fmt: skip
        return int(seq or 0), text(epoch)

    async def history(
        self, channel: str, since: int, epoch: str | None = None
    ) -> list[Publication]:
        what = f"history of {channel!r}"
        keys = self._key(channel, "seq"), self._key(channel, "epoch")
        stream = self._key(channel, "stream")

        async def read(client: Any) -> Any:
            async with client.pipeline(transaction=True) as pipe:  # one slot: one snapshot
                pipe.mget(*keys)
                pipe.xrange(stream, f"{since + 1}-1", "+")
                return await pipe.execute()

        (current, room_epoch), entries = await self._on_owner(channel, read, what)
        kept = stream_publications(channel, entries)
        room_epoch = None if room_epoch is None else text(room_epoch)
        return check_history(channel, since, epoch, int(current or 0), room_epoch, kept)

    async def presence_add(self, channel: str, member: str, info: bytes, ttl: float) -> None:
        key = self._key(channel, "presence")
        expires = f"{time.time() + ttl:.3f}".encode()

        async def add(client: Any) -> Any:
            async with client.pipeline(transaction=False) as pipe:
                pipe.hset(key, member, expires + b" " + info)
                pipe.expire(key, max(1, int(ttl * 2)))  # gone if every worker died
                return await pipe.execute()

        await self._on_owner(channel, add, f"presence of {channel!r}")

    async def presence_remove(self, channel: str, member: str) -> None:
        key = self._key(channel, "presence")
        await self._on_owner(channel, lambda c: c.hdel(key, member), f"presence of {channel!r}")

    async def presence(self, channel: str) -> dict[str, bytes]:
        key, what = self._key(channel, "presence"), f"presence of {channel!r}"
        entries = await self._on_owner(channel, lambda c: c.hgetall(key), what)
        now, members, stale = time.time(), {}, []
        for member, value in entries.items():
            expires, _, info = value.partition(b" ")
            if float(expires) > now:
                members[text(member)] = info
            else:
                stale.append(member)
        if stale:  # a worker that died without cleaning up: its entries expired
            await self._on_owner(channel, lambda c: c.hdel(key, *stale), what)
        return members

    async def _on_owner(self, channel: str, call: Callable[[Any], Awaitable[Any]],
                        what: str) -> Any:  # fmt: skip
        """``call(client)`` on the node that owns ``channel``, once more after ``MOVED``."""
        for attempt in (1, 2):
            addr = self.topology.owner(self._key(channel, "seq"))
            try:
                if addr is None:
                    raise BackendUnavailable(f"{what} failed: no cluster node owns its slot")
                with anyio.fail_after(self.publish_timeout):
                    return await call(self.topology.client(addr))
            except (RedisError, OSError, TimeoutError, BackendUnavailable) as exc:
                if attempt == 2 or not (_moved(exc) or addr is None):
                    self._listener.wake()
                    if isinstance(exc, BackendUnavailable):
                        raise
                    raise BackendUnavailable(f"{what} failed: {exc!r}") from exc
                await self._reroute()
        raise AssertionError("unreachable")  # pragma: no cover

    def _key(self, channel: str, kind: str) -> str:
        return self._naming.key(channel, kind)

    async def _reroute(self) -> None:
        with contextlib.suppress(BackendUnavailable):
            await self.topology.refresh()
        self._listener.wake()


def _moved(exc: BaseException | None) -> bool:
    return isinstance(exc, ResponseError) and str(exc).startswith(("MOVED", "ASK", "TRYAGAIN"))
