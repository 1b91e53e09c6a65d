"""What the single-node and the cluster Redis backends share: the Lua scripts that number,
keep and deliver a publication atomically (as ``envelope.pack_numbered`` payloads), the publish
that tells "not applied" from "outcome unknown", and the listener's read loop."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import redis.asyncio as aioredis
from anyio.streams.memory import MemoryObjectSendStream
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from .base import Publication, PublishNotApplied, PublishOutcomeUnknown, Resync
from .envelope import unpack_numbered

__all__ = [
    "POSITION",
    "idempotency_kind",
    "publish_once",
    "publish_script",
    "read_publications",
    "text",
    "without_retries",
]

logger = logging.getLogger("asgi_rt.backends.redis")


def idempotency_kind(key: str | None) -> str:
    """The key-kind part for an idempotency key, length-prefixed so that no (room, key)
    pair spells another's: ``key:msg-7`` + ``chat:42`` and ``key:msg-7:chat`` + ``42``
    used to be one Redis key, and the second publish was "applied" without happening."""
    return "key:" if key is None else f"key:{len(key)}:{key}"


# KEYS: seq, epoch, stream, channel, idempotency key
# ARGV: data, maxlen, fresh epoch, room ttl (ms), key ttl (ms), '1' when a key is given.
# Numbering that starts again (the seq key is gone: a restart, FLUSHALL, expiry, eviction)
# always starts a new epoch, so no client can mistake the new numbering for the old one.
_PUBLISH = """
if ARGV[6] == '1' then
  local prior = redis.call('GET', KEYS[5])
  if prior then
    local space = string.find(prior, ' ')
    return {tonumber(string.sub(prior, 1, space - 1)), string.sub(prior, space + 1), 1}
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[2], ARGV[3])
  redis.call('DEL', KEYS[3])
end
local seq = redis.call('INCR', KEYS[1])
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', KEYS[2], epoch)
end
if tonumber(ARGV[2]) > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], seq .. '-1', 'e', epoch, 'd', ARGV[1])
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if ARGV[6] == '1' then
  redis.call('SET', KEYS[5], seq .. ' ' .. epoch, 'PX', ARGV[5])
end
redis.call('PUBLISH', KEYS[4], epoch .. ' ' .. seq .. ' ' .. ARGV[1])  -- envelope.pack_numbered
return {seq, epoch, 0}
"""


def publish_script(command: str = "PUBLISH") -> str:
    """The publish script, delivering with ``PUBLISH`` or (on a cluster) ``SPUBLISH``."""
    if command not in {"PUBLISH", "SPUBLISH"}:
        raise ValueError(f"expected PUBLISH or SPUBLISH, got {command!r}")
    return _PUBLISH.replace("redis.call('PUBLISH'", f"redis.call('{command}'")


# KEYS: seq, epoch, stream; ARGV: fresh epoch, room ttl (ms). A room gets its epoch at its
# first join, not its first publication, so every client that joined can resume exactly.
POSITION = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], 0)
  redis.call('SET', KEYS[2], ARGV[1])
  redis.call('DEL', KEYS[3])
end
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return {redis.call('GET', KEYS[1]), epoch}
"""


async def publish_once(
    pool: Any, script: Any, keys: list[str], args: list[Any], channel: str, timeout: float
) -> Any:
    """Run the publish script exactly once on a connection of ``pool`` (never retried: a
    retry after a lost answer could publish twice), telling apart "never sent" from "sent,
    answer lost".

    Raises:
        PublishNotApplied: no connection within ``timeout``, or Redis refused the script
            (its error reply is the exception's cause: ``MOVED``, ``CLUSTERDOWN``, ...).
        PublishOutcomeUnknown: it was sent and no answer came.
    """
    sent = False
    conn: Any = None
    try:
        with anyio.fail_after(timeout):
            conn = await pool.get_connection()  # connected, or it raised: nothing sent
            sent = True
            return await _evalsha(conn, script, keys, args)
    except (RedisError, OSError, TimeoutError) as exc:
        if conn is not None:
            await conn.disconnect()  # its state is unknown: never reuse it
        what = f"publish to {channel!r}"
        if not sent or isinstance(exc, ResponseError):
            raise PublishNotApplied(f"{what} was not applied: {exc!r}") from exc
        raise PublishOutcomeUnknown(f"{what} may or may not have applied: {exc!r}") from exc
    finally:
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await pool.release(conn)


async def _evalsha(conn: Any, script: Any, keys: list[str], args: list[Any]) -> Any:
    await conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
    try:
        return await conn.read_response()
    except NoScriptError:  # Redis restarted and forgot it: nothing ran, send it whole
        await conn.send_command("EVAL", script.script, len(keys), *keys, *args)
        return await conn.read_response()


async def read_publications(
    pubsub: Any, send: MemoryObjectSendStream[Publication | Resync],
    channel_of: Callable[[str], str], *, ping_interval: float, ping_timeout: float,
) -> None:  # fmt: skip
    """Read publications into ``send`` until the connection fails; PING when idle, because
    a connection Redis killed can read as merely idle (redis-py returns ``None`` at EOF):
    no PONG in time means dead. ``channel_of`` maps a Redis channel name to the room."""
    heard = anyio.current_time()
    pinged: float | None = None
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        now = anyio.current_time()
        if message is None:
            if pinged is not None and now - pinged > ping_timeout:
                raise RedisConnectionError(f"no PONG within {ping_timeout} s")
            if pinged is None and now - heard >= ping_interval:
                await pubsub.ping()
                pinged = now
            continue
        heard, pinged = now, None
        if message.get("type") not in {"message", "smessage"}:
            continue  # pong, or a subscribe confirmation
        publication = _parse(channel_of(text(message["channel"])), message["data"])
        if publication is not None:
            await send.send(publication)  # bounded: waits rather than buffer more


def without_retries(client: aioredis.Redis, max_connections: int = 4) -> aioredis.Redis:
    """A client on the same server whose connections never retry or reconnect by themselves.

    redis-py's pub/sub reconnects and resubscribes silently when a read fails (e.g. after
    Redis killed it for its output buffer): what was published meanwhile is lost and
    nobody is told. The listener must see that error, count it, and recover itself.
    """
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
    return aioredis.Redis(connection_pool=type(pool)(connection_class=pool.connection_class,
                                                     max_connections=max_connections,
                                                     **kwargs))  # fmt: skip


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse(channel: str, payload: bytes) -> Publication | None:
    try:
        return unpack_numbered(channel, payload)
    except ValueError:
        logger.warning("ignoring a malformed backplane message on %r", channel)
        return None
