"""RedisBackend: rooms across workers and machines through Redis (the ``redis`` extra).

asyncio only (redis-py's asyncio client). One pub/sub connection per process carries
every room this process has members in: SUBSCRIBE on a room's first local member,
UNSUBSCRIBE on its last. A publish is one Lua call that numbers the publication
(``INCR``), appends it to the room's Stream (``XADD MAXLEN ~ history_size``, the
history), and PUBLISHes it, atomically. The room's ``epoch`` key changes when its
history is lost (a Redis restart without persistence, or eviction), so a client
resuming from an old epoch is told recovery is impossible instead of getting a gap.

When Redis drops the listener's connection (restart, network, or its own
``client-output-buffer-limit`` kill), the listener logs a WARNING, reconnects with
capped exponential backoff and full jitter, and resubscribes every active room;
``listener_up`` (and the ``asgi_rt_backplane_listener_up`` gauge, when metrics are
wired) says whether it is connected. Publications sent while it was down are in the
rooms' history: clients resume from their last ``seq``. A publish during an outage
fails within ``publish_timeout`` with :class:`BackendUnavailable`; it never hangs.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import anyio
import redis.asyncio as aioredis
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._background import Background
from ._redis_common import (
    POSITION,
    publish_call,
    publish_once,
    publish_script,
    read_publications,
    stream_publications,
    text,
    without_retries,
)
from .base import BackendUnavailable, Publication, Resync, check_history, check_options

__all__ = ["RedisBackend"]

logger = logging.getLogger("asgi_rt.backends.redis")

_PUBLISH = publish_script("PUBLISH")


class RedisBackend:
    """Pub/sub, sequence numbers and Stream history in Redis.

    Args:
        client: a ``redis.asyncio.Redis`` (its connection pool is used for publishes and
            history; the listener takes one extra connection).
        history_size: publications kept per room (approximately: ``MAXLEN ~``).
        prefix: key prefix for every key and channel this backend touches.
        buffer: publications the local listener may hold before it stops reading.
        publish_timeout: seconds before a publish fails with ``BackendUnavailable``.
        max_backoff: cap of the listener's reconnect backoff, in seconds. Small on purpose:
            it is one connection per process, and members hear nothing until it is back,
            so live delivery resumes within about this long of Redis being usable again.
        ping_interval: idle seconds after which the listener PINGs its connection.
        ping_timeout: seconds without the PONG before the connection counts as dead.
        on_listener_state: ``hook(up: bool)`` when the listener (dis)connects.
        room_ttl: seconds a room's keys (numbering, epoch, history) live after its last
            publish or join; then they expire and the room starts again under a new epoch.
        idempotency_ttl: seconds a publish's ``idempotency_key`` is remembered.

    A publish raises :class:`PublishNotApplied` when it never reached Redis (no connection
    could be had within ``publish_timeout``, or Redis refused it) and
    :class:`PublishOutcomeUnknown` when it was sent but no answer came (Redis may have
    applied it; SIGSTOP, a partition, a connection reset mid-command). Retrying the latter
    with the same ``idempotency_key`` applies it at most once.
    """

    def __init__(
        self,
        client: aioredis.Redis,
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
    ) -> None:
        check_options(history_size=history_size, buffer=buffer, room_ttl=room_ttl,
                      idempotency_ttl=idempotency_ttl, publish_timeout=publish_timeout,
                      max_backoff=max_backoff)  # fmt: skip
        self.client = client
        self.history_size = history_size
        self.prefix = prefix
        self.publish_timeout = publish_timeout
        self.max_backoff = max_backoff
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.on_listener_state = on_listener_state
        self.room_ttl = room_ttl
        self.idempotency_ttl = idempotency_ttl
        self.listener_up = False
        self.reconnects = 0
        self._buffer = buffer
        self._channels: set[str] = set()
        self._pubsub: Any = None
        self._listener_client: aioredis.Redis | None = None
        self._script: Any = None
        self._position_script: Any = None
        self._background = Background()
        self._send: MemoryObjectSendStream[Publication | Resync] | None = None
        self._receive: MemoryObjectReceiveStream[Publication | Resync] | None = None

    @classmethod
    def from_url(cls, url: str, *, max_connections: int = 64, **options: Any) -> RedisBackend:
        """A client for ``url`` whose pool waits for a free connection instead of failing.

        redis-py's default pool raises ``MaxConnectionsError`` as soon as its connections
        are all busy, so a burst of joins (a reconnect herd) turned into 1011s. This pool
        holds at most ``max_connections`` and makes a caller wait for one, at most
        ``publish_timeout`` (then the call fails with ``BackendUnavailable``). A command
        other than publish is retried once on a fresh connection (after a Redis restart the
        pooled ones are dead); a publish never is (see :meth:`publish`). The listener
        treats idle read timeouts (redis-py 8 sets 5 s socket timeouts) as normal.
        """
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections,
            timeout=options.get("publish_timeout", 2.0),
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )  # fmt: skip
        return cls(aioredis.Redis.from_pool(pool), **options)  # the client owns its pool

    async def __aenter__(self) -> Self:
        await self.ping()
        self._script = self.client.register_script(_PUBLISH)
        self._position_script = self.client.register_script(POSITION)
        self._listener_client = without_retries(self.client)
        self._send, self._receive = anyio.create_memory_object_stream[Publication | Resync](
            self._buffer
        )
        await self._background.start(self._listen)
        return self

    async def ping(self) -> None:
        """Check that Redis answers (``async with`` does first, so that an app with no
        Redis fails at startup, not at its first publish).

        Raises:
            BackendUnavailable: no answer within ``publish_timeout``; the client is closed.
        """
        kwargs = self.client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        try:
            await self._guarded(self.client.ping(), f"PING to Redis at {where}")
        except BackendUnavailable as exc:
            await self.client.aclose()
            raise BackendUnavailable(f"{exc}; is Redis running there? (check the URL)") from (
                exc.__cause__  # the redis-py error, without the message repeated
            )

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        await self._background.stop()
        if self._send is not None:
            self._send.close()
        if self._receive is not None:
            self._receive.close()
        if self._listener_client is not None:
            await self._listener_client.aclose()
        await self.client.aclose()

    async def publish(
        self, channel: str, data: bytes, *, idempotency_key: str | None = None
    ) -> Publication:
        keys, args = publish_call(
            self._key, channel, data, idempotency_key, history_size=self.history_size,
            room_ttl=self.room_ttl, idempotency_ttl=self.idempotency_ttl,
        )  # fmt: skip
        seq, epoch, _ = await self._publish_once(keys, args, channel)
        return Publication(channel, int(seq), text(epoch), data)

    async def _publish_once(self, keys: list[str], args: list[Any], channel: str) -> Any:
        pool: Any = self.client.connection_pool
        return await publish_once(pool, self._script, keys, args, channel, self.publish_timeout)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        if self._pubsub is not None and self.listener_up:
            try:
                await self._pubsub.subscribe(self._key(channel, "pub"))
            except (RedisError, OSError) as exc:  # the listener resubscribes on reconnect
                logger.debug("subscribe %r deferred to the reconnect: %r", channel, exc)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        if self._pubsub is not None and self.listener_up:
            try:
                await self._pubsub.unsubscribe(self._key(channel, "pub"))
            except (RedisError, OSError) as exc:
                logger.debug("unsubscribe %r failed (connection lost): %r", channel, exc)

    def publications(self) -> AsyncIterator[Publication | Resync]:
        if self._receive is None:
            raise RuntimeError("RedisBackend is not started: use it as 'async with'")
        return self._receive

    async def position(self, channel: str) -> tuple[int, str | None]:
        keys = [self._key(channel, "seq"), self._key(channel, "epoch"),
                self._key(channel, "stream")]  # fmt: skip
        args = [uuid.uuid4().hex[:12], int(self.room_ttl * 1000)]
        seq, epoch = await self._guarded(
            self._position_script(keys=keys, args=args), f"position of {channel!r}"
        )
        return int(seq or 0), text(epoch)

    async def history(
        self, channel: str, since: int, epoch: str | None = None
    ) -> list[Publication]:
        what = f"history of {channel!r}"
        keys = self._key(channel, "seq"), self._key(channel, "epoch")
        current, room_epoch = await self._guarded(self.client.mget(*keys), what)
        stream = self._key(channel, "stream")
        entries = await self._guarded(self.client.xrange(stream, f"{since + 1}-1", "+"), what)
        kept = stream_publications(channel, entries)
        room_epoch = None if room_epoch is None else text(room_epoch)
        return check_history(channel, since, epoch, int(current or 0), room_epoch, kept)

    async def presence_add(self, channel: str, member: str, info: bytes, ttl: float) -> None:
        key = self._key(channel, "presence")
        expires = f"{time.time() + ttl:.3f}".encode()
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(key, member, expires + b" " + info)
            pipe.expire(key, max(1, int(ttl * 2)))  # the whole hash goes if every worker died
            await self._guarded(pipe.execute(), f"presence of {channel!r}")

    async def presence_remove(self, channel: str, member: str) -> None:
        await self._guarded(self.client.hdel(self._key(channel, "presence"), member),
                            f"presence of {channel!r}")  # fmt: skip

    async def presence(self, channel: str) -> dict[str, bytes]:
        key = self._key(channel, "presence")
        entries = await self._guarded(self.client.hgetall(key), f"presence of {channel!r}")
        now, members, stale = time.time(), {}, []
        for member, value in entries.items():
            expires, _, info = value.partition(b" ")
            if float(expires) > now:
                members[text(member)] = info
            else:
                stale.append(member)
        if stale:  # a worker that died without cleaning up: its entries expired
            await self._guarded(self.client.hdel(key, *stale), f"presence of {channel!r}")
        return members

    async def _guarded(self, awaitable: Awaitable[Any], what: str) -> Any:
        try:
            with anyio.fail_after(self.publish_timeout):
                return await awaitable
        except (RedisError, OSError, TimeoutError) as exc:
            raise BackendUnavailable(f"{what} failed: {exc!r}") from exc

    def _key(self, channel: str, kind: str) -> str:
        return f"{self.prefix}{kind}:{channel}"

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._listen_once()
                backoff = 0.1
            except (RedisError, OSError, TimeoutError) as exc:
                self._set_up(False)
                self.reconnects += 1
                delay = random.uniform(0, backoff)  # full jitter
                logger.warning("backplane listener lost Redis (%r); reconnecting in %.2f s",
                               exc, delay)  # fmt: skip
                await anyio.sleep(delay)
                backoff = min(self.max_backoff, backoff * 2)

    async def _listen_once(self) -> None:
        assert self._listener_client is not None
        pubsub = self._listener_client.pubsub()
        try:
            await pubsub.subscribe(self._key("__asgi_rt_control__", "pub"))  # keeps it open
            channels = [self._key(c, "pub") for c in self._channels]
            if channels:
                await pubsub.subscribe(*channels)
            self._pubsub = pubsub
            self._set_up(True)
            if self._channels and self._send is not None:  # subscribed late, or again
                await self._send.send(Resync(tuple(self._channels)))  # what was missed?
            await self._read(pubsub)
        finally:
            self._pubsub = None
            self._set_up(False)
            await pubsub.aclose()

    async def _read(self, pubsub: Any) -> None:
        assert self._send is not None
        prefix_len = len(self._key("", "pub"))
        await read_publications(pubsub, self._send, lambda name: name[prefix_len:],
                                ping_interval=self.ping_interval,
                                ping_timeout=self.ping_timeout)  # fmt: skip

    def _set_up(self, up: bool) -> None:
        if self.listener_up == up:
            return
        self.listener_up = up
        if self.on_listener_state is not None:
            try:
                self.on_listener_state(up)
            except Exception:
                logger.exception("on_listener_state hook raised; ignoring it")
