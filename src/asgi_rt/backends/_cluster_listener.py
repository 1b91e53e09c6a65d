"""The Redis Cluster backend's listeners: one sharded subscription connection per master
that owns a subscribed room, a supervisor that starts them, and the Resync rule.

A room's subscription is *live* once ``SSUBSCRIBE`` went out on its owner's connection. When
that connection fails, its rooms are *lost*; when they are live again (on the same node
or, after a failover or a resharding, on another), one ``Resync`` names them.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from ._cluster_topology import Topology
from ._redis_common import read_publications
from .base import BackendUnavailable, Publication, Resync

__all__ = ["Naming", "ShardedListener"]

logger = logging.getLogger("asgi_rt.backends.redis_cluster")


@dataclass(frozen=True, slots=True)
class Naming:
    """Key and channel names: every name of a room carries the room as its hash tag."""

    prefix: str

    def key(self, channel: str, kind: str) -> str:
        return f"{self.prefix}{{{channel}}}:{kind}"

    def room_of(self, name: str) -> str:
        """The room of a ``...:pub`` channel name."""
        return name[len(self.prefix) + 1 : -len("}:pub")]


class ShardedListener:
    """Rooms subscribed on their owners' connections, publications into ``send``.

    ``up`` says whether every subscribed room is live; ``on_state(up)`` hears changes.
    """

    def __init__(
        self, topology: Topology, naming: Naming,
        send: MemoryObjectSendStream[Publication | Resync], *, max_backoff: float,
        ping_interval: float, ping_timeout: float, interval: float,
        on_state: Callable[[bool], None] | None,
    ) -> None:  # fmt: skip
        self._topology = topology
        self._naming = naming
        self._send = send
        self._max_backoff = max_backoff
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._interval = interval
        self._on_state = on_state
        self.up = False
        self.reconnects = 0
        self._channels: set[str] = set()
        self._live: dict[str, str] = {}  # channel -> the node whose connection carries it
        self._lost: set[str] = set()  # channels whose live subscription broke: Resync due
        self._pubsubs: dict[str, PubSub | None] = {}  # node -> its listener's connection
        self._wake = anyio.Event()

    def wake(self) -> None:
        """Reload the slot table and reconcile soon (a publish met a failed node)."""
        self._wake.set()

    async def _reroute(self) -> None:
        with contextlib.suppress(BackendUnavailable):
            await self._topology.refresh()
        self._wake.set()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        if channel in self._live:
            return
        self._set_up(False)
        addr = self._topology.owner(self._naming.key(channel, "seq"))
        if addr is None or addr not in self._pubsubs:
            self._wake.set()  # no listener for its node yet: the supervisor starts one
        else:
            await self._attach([channel])  # or the node's listener, once connected

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        self._lost.discard(channel)
        addr = self._live.pop(channel, None)
        pubsub = self._pubsubs.get(addr) if addr is not None else None
        if pubsub is not None:
            try:
                await pubsub.sunsubscribe(self._naming.key(channel, "pub"))
            except (RedisError, OSError) as exc:
                logger.debug("sunsubscribe %r failed (connection lost): %r", channel, exc)
        self._check_up()

    async def run(self) -> None:
        """The supervisor: starts a listener per node that owns a subscribed room; runs
        until cancelled."""
        self._check_up()
        async with anyio.create_task_group() as tg:
            while True:
                self._reconcile(tg)
                with anyio.move_on_after(self._interval) as idle:
                    await self._wake.wait()
                self._wake = anyio.Event()
                if idle.cancelled_caught:
                    with contextlib.suppress(BackendUnavailable):
                        await self._topology.refresh()

    def _reconcile(self, tg: TaskGroup) -> None:
        """Start a listener for every node that owns a subscribed room and has none; rooms
        whose slot moved to another node are resubscribed there."""
        for channel in list(self._channels):
            addr = self._topology.owner(self._naming.key(channel, "seq"))
            if addr is None:
                continue
            old = self._live.get(channel)
            if old is not None and old != addr:  # resharded or failed over
                del self._live[channel]
                self._lost.add(channel)
                self._check_up()
            if addr not in self._pubsubs:
                self._pubsubs[addr] = None
                tg.start_soon(self._node_listener, addr)
            elif self._pubsubs[addr] is not None and channel not in self._live:
                tg.start_soon(self._attach, [channel])

    async def _node_listener(self, addr: str) -> None:
        backoff = 0.1
        try:
            while self._mine(addr):
                try:
                    await self._listen_node(addr)
                except (RedisError, OSError, TimeoutError) as exc:
                    self.reconnects += 1
                    delay = random.uniform(0, backoff)  # full jitter
                    logger.warning("backplane listener lost Redis node %s (%r); reconnecting "
                                   "in %.2f s", addr, exc, delay)  # fmt: skip
                    await anyio.sleep(delay)
                    backoff = min(self._max_backoff, backoff * 2)
                    await self._reroute()  # its rooms may live elsewhere now
        finally:
            self._pubsubs.pop(addr, None)
            self._wake.set()

    async def _listen_node(self, addr: str) -> None:
        pubsub = self._topology.listener_client(addr).pubsub()
        try:
            for channel in self._mine(addr):  # one by one: SSUBSCRIBE takes one slot a call
                await pubsub.ssubscribe(self._naming.key(channel, "pub"))
            self._pubsubs[addr] = pubsub
            await self._attach(list(self._mine(addr)))  # joined meanwhile; announces Resync
            await read_publications(pubsub, self._send, self._naming.room_of,
                                    ping_interval=self._ping_interval,
                                    ping_timeout=self._ping_timeout)  # fmt: skip
        finally:
            self._pubsubs[addr] = None
            for channel in [c for c, a in self._live.items() if a == addr]:
                del self._live[channel]
                self._lost.add(channel)
            self._check_up()
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()

    async def _attach(self, channels: list[str]) -> None:
        """Subscribe ``channels`` on their owner's live connection, if it has one; a Resync
        for those whose earlier subscription broke."""
        resync = []
        for channel in channels:
            addr = self._topology.owner(self._naming.key(channel, "seq"))
            pubsub = self._pubsubs.get(addr) if addr is not None else None
            if pubsub is None or channel not in self._channels:
                continue
            try:
                await pubsub.ssubscribe(self._naming.key(channel, "pub"))
            except (RedisError, OSError) as exc:  # the node listener resubscribes it
                logger.debug("ssubscribe %r deferred to the reconnect: %r", channel, exc)
                continue
            self._live[channel] = addr  # type: ignore[assignment]  # addr is set with pubsub
            if channel in self._lost:
                self._lost.discard(channel)
                resync.append(channel)
        self._check_up()
        if resync:
            await self._send.send(Resync(tuple(resync)))  # what was missed?

    def _mine(self, addr: str) -> set[str]:
        return {
            c for c in self._channels if self._topology.owner(self._naming.key(c, "seq")) == addr
        }

    def _check_up(self) -> None:
        self._set_up(all(c in self._live for c in self._channels))

    def _set_up(self, up: bool) -> None:
        if self.up == up:
            return
        self.up = up
        if self._on_state is not None:
            try:
                self._on_state(up)
            except Exception:
                logger.exception("on_listener_state hook raised; ignoring it")
