"""NatsBackend: rooms across workers through NATS JetStream (the ``nats`` extra).

asyncio only (nats-py). Every room is one subject of one JetStream stream,
``<prefix>.in.<room>``, that keeps the last ``history_size`` publications per room
(``max_msgs_per_subject``) for ``room_ttl`` seconds (``max_age``). The stream
*republishes* every message it stored, in stream order, to ``<prefix>.live.<room>`` on
core NATS: each worker holds one core subscription per room with local members, so a
publication travels only to the workers that need it, and a publish the stream refused
(a numbering conflict, a duplicate) is never delivered.

Numbering: JetStream's sequence is per stream, so the room's ``seq`` and ``epoch`` are
headers of each message, and a publish is optimistic: it sends ``seq + 1`` with
``Nats-Expected-Last-Subject-Sequence`` set to the stream sequence of the room's last
message; if another publisher got there first the stream refuses it, and the publish
reads the room's last message and tries again. The epoch is inherited from the room's
last message; a room without one (never used, expired after ``room_ttl``, or its stream
lost: a restart with the store wiped) starts with a fresh epoch and an "opening" message
of ``seq`` 0, so numbering that restarts always starts a new epoch. ``idempotency_key``
is JetStream's ``Nats-Msg-Id`` (remembered for ``idempotency_ttl``, the stream's
duplicate window). Presence is a second stream, one subject per member.

nats-py reconnects by itself and restores the core subscriptions; what was published
meanwhile is in the stream, so the backend emits :class:`Resync` for every subscribed
room after a reconnect (and after a slow-consumer drop). ``listener_up`` says whether
the connection is up. A publish while it is down fails at once with
:class:`PublishNotApplied`; one whose acknowledgement does not come within
``publish_timeout`` raises :class:`PublishOutcomeUnknown`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

import anyio
import nats
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError, SlowConsumerError
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NoStreamResponseError

from ._nats_streams import EPOCH, SEQ, read_all, stream_configs, token, untoken
from .base import (
    BackendUnavailable,
    Publication,
    PublishNotApplied,
    PublishOutcomeUnknown,
    Resync,
    check_history,
    check_options,
)

__all__ = ["NatsBackend"]

logger = logging.getLogger("asgi_rt.backends.nats")

_WRONG_LAST_SEQUENCE, _STREAM_NOT_FOUND, _NO_MESSAGE = 10071, 10059, 10037
_MAX_CONFLICTS = 100


class NatsBackend:
    """Live fan-out on core NATS, numbering and history in a JetStream stream.

    Args:
        url: ``nats://host:port`` (a comma-separated list is a cluster's seed list).
        history_size: publications kept per room (at least 1 is kept: it holds the
            room's numbering).
        prefix: subject prefix and stream name prefix (letters, digits, ``_``, ``-``).
        buffer: publications the local listener may hold before the subscription's own
            bound (also ``buffer``) makes NATS drop and the backend emit a Resync.
        publish_timeout: seconds to wait for the server's answer to any request.
        max_backoff: seconds between reconnect attempts.
        on_listener_state: ``hook(up: bool)`` when the connection drops or comes back.
        room_ttl: seconds a publication is kept; a room whose last publication is older
            starts again under a new epoch.
        idempotency_ttl: seconds a publish's ``idempotency_key`` is remembered
            (JetStream's duplicate window; at most ``room_ttl``).
    """

    def __init__(
        self,
        url: str,
        *,
        history_size: int = 1000,
        prefix: str = "asgi_rt",
        buffer: int = 10_000,
        publish_timeout: float = 2.0,
        max_backoff: float = 0.5,
        on_listener_state: Callable[[bool], None] | None = None,
        room_ttl: float = 3600.0,
        idempotency_ttl: float = 300.0,
    ) -> None:
        check_options(history_size=history_size, buffer=buffer, room_ttl=room_ttl,
                      idempotency_ttl=idempotency_ttl, publish_timeout=publish_timeout,
                      max_backoff=max_backoff)  # fmt: skip
        if idempotency_ttl > room_ttl:  # JetStream's dedupe window lives inside max_age
            raise ValueError(f"0 < idempotency_ttl <= room_ttl is required, got "
                             f"{idempotency_ttl}, {room_ttl}")  # fmt: skip
        if not prefix or not prefix.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"prefix must be letters, digits, '_' or '-', got {prefix!r}")
        self.url = url
        self.history_size = history_size
        self.prefix = prefix
        self.publish_timeout = publish_timeout
        self.max_backoff = max_backoff
        self.on_listener_state = on_listener_state
        self.room_ttl = room_ttl
        self.idempotency_ttl = idempotency_ttl
        self.listener_up = False
        self.reconnects = 0
        self._closing = False
        self._stream = f"{prefix}_rooms"
        self._presence_stream = f"{prefix}_presence"
        self._buffer = buffer
        self._nc: Client | None = None
        self._subs: dict[str, Any] = {}
        self._last: dict[str, tuple[int, int, str]] = {}  # room: stream seq, seq, epoch
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}  # room: lock, its users
        self._send: MemoryObjectSendStream[Publication | Resync] | None = None
        self._receive: MemoryObjectReceiveStream[Publication | Resync] | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> NatsBackend:
        """The backend for ``nats://host:port`` (what ``make_backend`` calls)."""
        return cls(url, **options)

    async def __aenter__(self) -> Self:
        self._send, self._receive = anyio.create_memory_object_stream[Publication | Resync](
            self._buffer
        )
        try:
            self._nc = await nats.connect(
                self.url.split(","), connect_timeout=max(1, round(self.publish_timeout)),
                reconnect_time_wait=self.max_backoff, max_reconnect_attempts=-1,
                allow_reconnect=True, ping_interval=3, max_outstanding_pings=2,
                error_cb=self._on_error, disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )  # fmt: skip
        except (NatsError, OSError, TimeoutError) as exc:
            hint = "is nats-server running there with -js? (check the URL)"
            raise BackendUnavailable(f"no NATS at {self.url} ({exc!r}); {hint}") from exc
        self._set_up(True)
        await self._guarded(self._ensure_streams(), f"JetStream streams at {self.url}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self._closing = True  # our own close is no outage to warn about
        if self._nc is not None:
            with anyio.CancelScope(shield=True):
                await self._nc.close()
        self._set_up(False)
        if self._send is not None:
            self._send.close()
        if self._receive is not None:
            self._receive.close()

    async def _ensure_streams(self) -> None:
        """Create the rooms' and the presence streams (again, after a wiped restart)."""
        js = self._js()
        rooms, presence = stream_configs(self.prefix, history_size=self.history_size,
                                         room_ttl=self.room_ttl,
                                         idempotency_ttl=self.idempotency_ttl)  # fmt: skip
        for config in (rooms, presence):
            try:
                await js.add_stream(config)
            except APIError:  # it exists with another config (an older version's)
                await js.update_stream(config)

    async def publish(
        self, channel: str, data: bytes, *, idempotency_key: str | None = None
    ) -> Publication:
        what = f"publish to {channel!r}"
        if not self.listener_up:
            raise PublishNotApplied(f"{what} was not applied: not connected to NATS")
        async with self._one_at_a_time(channel):  # no numbering conflicts with ourselves
            try:
                return await self._publish_numbered(channel, data, idempotency_key, what)
            except (PublishNotApplied, PublishOutcomeUnknown):
                raise
            except BackendUnavailable as exc:
                # reading the room's position or re-creating the streams failed: both come
                # before anything is stored (a refused store raises the subclasses above)
                raise PublishNotApplied(f"{what} was not applied: {exc}") from exc

    async def _publish_numbered(
        self, channel: str, data: bytes, key: str | None, what: str
    ) -> Publication:
        for _ in range(_MAX_CONFLICTS):
            last = self._last.get(channel) or await self._read_last(channel, what)
            stream_seq, seq, epoch = last or (0, 0, uuid.uuid4().hex[:12])
            headers = {SEQ: str(seq + 1), EPOCH: epoch,
                       "Nats-Expected-Last-Subject-Sequence": str(stream_seq)}  # fmt: skip
            if key is not None:
                headers["Nats-Msg-Id"] = f"{token(channel)}:{key}"
            ack = await self._store(channel, data, headers, what)
            if ack is None:  # another publisher took seq + 1: read where the room is now
                self._last.pop(channel, None)
                continue
            if ack.duplicate:
                return await self._original(channel, ack.seq, what)
            self._last[channel] = (ack.seq, seq + 1, epoch)
            return Publication(channel, seq + 1, epoch, data)
        raise PublishNotApplied(f"{what} was not applied: {_MAX_CONFLICTS} numbering "
                                "conflicts in a row")  # fmt: skip

    async def _store(
        self, channel: str, data: bytes, headers: dict[str, str], what: str
    ) -> api.PubAck | None:
        """One JetStream publish; ``None`` when the room's numbering moved meanwhile."""
        js = self._js()
        for attempt in range(2):
            try:
                return await js.publish(self._subject(channel), data, headers=headers)
            except (NoStreamResponseError, NoRespondersError) as exc:  # nothing stored it
                if attempt or not self.listener_up:
                    raise PublishNotApplied(f"{what} was not applied: {exc!r}") from exc
                await self._guarded(self._ensure_streams(), what)  # lost with the store
            except APIError as exc:
                if exc.err_code == _WRONG_LAST_SEQUENCE:
                    return None
                raise PublishNotApplied(f"{what} was not applied: {exc!r}") from exc
            except (NatsError, OSError, TimeoutError) as exc:
                raise PublishOutcomeUnknown(f"{what} may or may not have applied: "
                                            f"{exc!r}") from exc  # fmt: skip
        raise AssertionError("unreachable")  # pragma: no cover

    async def _original(self, channel: str, stream_seq: int, what: str) -> Publication:
        """The publication a repeated idempotency key refers to (still kept, usually)."""
        js = self._js()
        try:
            raw = await self._guarded(js.get_msg(self._stream, stream_seq), what)
        except BackendUnavailable as exc:
            raise PublishNotApplied(f"{what} repeats an idempotency key whose publication "
                                    "is no longer kept: not applied again") from exc  # fmt: skip
        headers = raw.headers or {}
        return Publication(channel, int(headers[SEQ]), headers[EPOCH], raw.data or b"")

    async def _read_last(self, channel: str, what: str) -> tuple[int, int, str] | None:
        """The room's last message: (its stream seq, its seq, its epoch), None if none."""
        if not self.listener_up:
            raise BackendUnavailable(f"{what} failed: not connected to NATS")
        js = self._js()
        try:
            raw = await js.get_last_msg(self._stream, self._subject(channel))
        except APIError as exc:
            if exc.err_code == _STREAM_NOT_FOUND:
                await self._guarded(self._ensure_streams(), what)
                return None
            if exc.err_code == _NO_MESSAGE:
                return None
            raise BackendUnavailable(f"{what} failed: {exc!r}") from exc
        except (NatsError, OSError, TimeoutError) as exc:
            raise BackendUnavailable(f"{what} failed: {exc!r}") from exc
        headers = raw.headers or {}
        return int(raw.seq or 0), int(headers.get(SEQ, 0)), str(headers.get(EPOCH, ""))

    async def position(self, channel: str) -> tuple[int, str | None]:
        what = f"position of {channel!r}"
        async with self._one_at_a_time(channel):
            return await self._position(channel, what)

    @asynccontextmanager
    async def _one_at_a_time(self, channel: str) -> AsyncIterator[None]:
        """This process's publishes to one room in turn; the lock lives while in use."""
        lock, users = self._locks.get(channel) or (anyio.Lock(), 0)
        self._locks[channel] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[channel]
            if users == 1:
                del self._locks[channel]
            else:
                self._locks[channel] = (lock, users - 1)

    async def _position(self, channel: str, what: str) -> tuple[int, str | None]:
        for _ in range(_MAX_CONFLICTS):
            last = await self._read_last(channel, what)
            if last is not None:
                self._last[channel] = last
                return last[1], last[2]
            epoch = uuid.uuid4().hex[:12]  # the room opens: seq 0 under a fresh epoch
            headers = {SEQ: "0", EPOCH: epoch, "Nats-Expected-Last-Subject-Sequence": "0"}
            try:
                ack = await self._store(channel, b"", headers, what)
            except (PublishNotApplied, PublishOutcomeUnknown) as exc:
                raise BackendUnavailable(f"{what} failed: {exc}") from exc
            if ack is not None:
                self._last[channel] = (ack.seq, 0, epoch)
                return 0, epoch
        raise BackendUnavailable(f"{what} failed: {_MAX_CONFLICTS} conflicts in a row")

    async def history(
        self, channel: str, since: int, epoch: str | None = None
    ) -> list[Publication]:
        what = f"history of {channel!r}"
        last = await self._read_last(channel, what)
        current, room_epoch = (last[1], last[2]) if last else (0, None)
        kept = []
        if since < current:
            everything = read_all(self._js(), self._stream, self._subject(channel),
                                  api.DeliverPolicy.ALL)  # fmt: skip
            messages = await self._guarded(everything, what)
            for msg in messages:
                headers = msg.headers or {}
                seq = int(headers.get(SEQ, 0))
                if seq > since and headers.get(EPOCH) == room_epoch:
                    kept.append(Publication(channel, seq, str(room_epoch), msg.data))
        return check_history(channel, since, epoch, current, room_epoch, kept)

    async def subscribe(self, channel: str) -> None:
        if channel in self._subs:
            return
        subject = f"{self.prefix}.live.{token(channel)}"

        async def deliver(msg: Msg) -> None:
            await self._deliver(channel, msg)

        self._subs[channel] = await self._client().subscribe(
            subject, cb=deliver, pending_msgs_limit=self._buffer
        )
        try:  # the server has it once this returns: a position read next is covered by it
            await self._client().flush(timeout=max(1, round(self.publish_timeout)))
        except (NatsError, TimeoutError) as exc:  # nats-py resubscribes on reconnect
            logger.debug("subscribe %r not confirmed (connection lost): %r", channel, exc)

    async def unsubscribe(self, channel: str) -> None:
        sub = self._subs.pop(channel, None)
        self._last.pop(channel, None)
        if sub is not None:
            try:
                await sub.unsubscribe()
            except NatsError as exc:
                logger.debug("unsubscribe %r failed (connection lost): %r", channel, exc)

    def publications(self) -> AsyncIterator[Publication | Resync]:
        if self._receive is None:
            raise RuntimeError("NatsBackend is not started: use it as 'async with'")
        return self._receive

    async def _deliver(self, channel: str, msg: Msg) -> None:
        headers = msg.headers or {}
        try:
            seq, epoch = int(headers[SEQ]), headers[EPOCH]
        except (KeyError, ValueError):
            logger.warning("ignoring a malformed backplane message on %r", channel)
            return
        stream_seq = int(headers.get("Nats-Sequence", 0))
        known = self._last.get(channel)
        if seq and stream_seq > (known[0] if known else 0):  # our next publish follows it
            self._last[channel] = (stream_seq, seq, epoch)
        if seq and self._send is not None:
            await self._send.send(Publication(channel, seq, epoch, msg.data))  # bounded

    async def presence_add(self, channel: str, member: str, info: bytes, ttl: float) -> None:
        expires = f"{time.time() + ttl:.3f}".encode()
        js = self._js()
        subject = self._presence_subject(channel, member)
        await self._guarded(js.publish(subject, expires + b" " + info), f"presence of {channel!r}")

    async def presence_remove(self, channel: str, member: str) -> None:
        js = self._js()
        await self._guarded(js.purge_stream(self._presence_stream,
                                            subject=self._presence_subject(channel, member)),
                            f"presence of {channel!r}")  # fmt: skip

    async def presence(self, channel: str) -> dict[str, bytes]:
        subject = self._presence_subject(channel, "*")
        messages = await self._guarded(
            read_all(
                self._js(), self._presence_stream, subject, api.DeliverPolicy.LAST_PER_SUBJECT
            ),
            f"presence of {channel!r}",
        )
        now, members = time.time(), {}
        for msg in messages:
            expires, _, info = msg.data.partition(b" ")
            if float(expires) > now:  # a worker that died stops refreshing: it expires
                members[untoken(msg.subject.rsplit(".", 1)[1])] = info
        return members

    async def _guarded(self, awaitable: Awaitable[Any], what: str) -> Any:
        try:
            with anyio.fail_after(self.publish_timeout * 2):
                return await awaitable
        except (NatsError, OSError, TimeoutError) as exc:
            raise BackendUnavailable(f"{what} failed: {exc!r}") from exc

    def _js(self) -> JetStreamContext:
        return self._client().jetstream(timeout=self.publish_timeout)

    def _client(self) -> Client:
        if self._nc is None:
            raise RuntimeError("NatsBackend is not started: use it as 'async with'")
        return self._nc

    def _subject(self, channel: str) -> str:
        return f"{self.prefix}.in.{token(channel)}"

    def _presence_subject(self, channel: str, member: str) -> str:
        who = member if member == "*" else token(member)
        return f"{self.prefix}.presence.{token(channel)}.{who}"

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError):  # NATS dropped some: the rooms must catch up
            rooms = [c for c, sub in self._subs.items() if sub is exc.sub]
            logger.warning("backplane listener too slow; NATS dropped publications")
            await self._resync(rooms or list(self._subs))
            return
        logger.warning("NATS connection error: %r", exc)

    async def _on_disconnected(self) -> None:
        if self.listener_up and not self._closing:
            logger.warning("backplane lost NATS at %s; nats-py is reconnecting", self.url)
        self._set_up(False)

    async def _on_reconnected(self) -> None:
        """Streams first (a restart may have wiped them), then up, then Resync: nothing
        reads a stream before JetStream answered (nats-server 2.9 can crash on a message
        get that arrives while it is still restoring its streams)."""
        self.reconnects += 1
        self._last.clear()  # the server may have lost its store: read positions again
        try:
            await self._guarded(self._ensure_streams(), f"JetStream streams at {self.url}")
        except BackendUnavailable as exc:  # publishes will say so; never break nats-py's task
            logger.warning("after reconnecting: %s", exc)
        self._set_up(True)
        await self._resync(list(self._subs))

    async def _resync(self, rooms: list[str]) -> None:
        if rooms and self._send is not None:
            await self._send.send(Resync(tuple(rooms)))

    def _set_up(self, up: bool) -> None:
        if self.listener_up == up:
            return
        self.listener_up = up
        if self.on_listener_state is not None:
            try:
                self.on_listener_state(up)
            except Exception:
                logger.exception("on_listener_state hook raised; ignoring it")
