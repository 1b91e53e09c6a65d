"""ResilientClient: a WebSocket client that reconnects, re-authenticates and resumes.

Built on the ``websockets`` library's asyncio client (asyncio only). Its own reconnecting
``async for ws in connect(...)`` is not used: it resets its backoff on every successful
handshake (a server that accepts and drops at once would be retried in a tight loop) and
its delays are process-wide settings, not an injectable policy.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
from anyio.abc import TaskGroup
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .._json import dumps, loads
from ..exceptions import ClientGaveUp, OutboxFull
from ._outcome import AuthFailed, Outcome, outcome_of
from .retry import Backoff, Disconnect, RetryPolicy

__all__ = ["ResilientClient", "since_query"]

logger = logging.getLogger("asgi_rt.client")

Token = str | Callable[[], Awaitable[str]]
ResumeUrl = Callable[[str, Mapping[str, int], Mapping[str, str]], str]
OnConnect = Callable[[ClientConnection, Mapping[str, int]], Awaitable[None]]


def since_query(url: str, positions: Mapping[str, int], epochs: Mapping[str, str]) -> str:
    """The default resume: with one room seen, reconnect to ``url?since=<its last seq>``,
    plus ``&epoch=`` when the server announced it (``join(..., announce=True)``).

    That is what ``rooms.join(conn, room, since=..., epoch=...)`` on a ``/ws/{room}`` route
    expects. A socket that joins several rooms resumes through ``on_connect`` instead.
    """
    if len(positions) != 1:
        return url
    room, seq = next(iter(positions.items()))
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in {"since", "epoch"}]
    query.append(("since", str(seq)))
    if room in epochs:
        query.append(("epoch", epochs[room]))
    return urlunsplit(parts._replace(query=urlencode(query)))


class ResilientClient:
    """A connection to ``url`` that survives server restarts, deploys and bad networks.

    ``async with ResilientClient(url, token=...) as client:`` connects in the background
    and keeps reconnecting after every disconnect, waiting as ``policy`` says (capped
    exponential backoff with full jitter; reset only by a connection that stayed up). On
    every (re)connect it authenticates with its first frame (``{"type": "auth", "token"}``,
    answered ``{"type": "auth_ok"}``), resumes its room from the last ``seq`` it saw, and
    flushes what was sent while disconnected.

    ``async for message in client`` yields decoded JSON messages (text that is not JSON as
    ``str``). Room publications (``{"room", "seq", "data"}``) come exactly once and in order
    across reconnects: the server replays what was missed and anything already seen is
    dropped. ``{"type": "recovery_failed"}`` is passed on (re-sync from your source of
    truth) and resets that room's position. App-level pings are answered and not yielded.

    Uptime counts from ``auth_ok``: an auth that times out is a failed attempt. A server's
    ``Retry-After`` (503/429) or a drain close's ``"; retry in 1.3s"`` reaches the policy as
    ``Disconnect.retry_after``, which :class:`Backoff` obeys. When the policy gives up (by
    default only after a 1008 close or a 401/403 handshake) iteration and ``send`` raise
    :class:`~asgi_rt.exceptions.ClientGaveUp`, which leaves ``async with`` as itself (not in
    an ``ExceptionGroup``) and names the phase the last attempt ended in.

    Args:
        url: ``ws://`` or ``wss://`` URL.
        token: the auth token, or an async function returning a fresh one per connect;
            ``None`` sends no auth frame.
        policy: a :class:`~asgi_rt.client.retry.RetryPolicy` (default :class:`Backoff`).
        outbox_size: messages ``send`` may hold while disconnected; beyond, ``OutboxFull``.
            Sending is at most once: a message written just before a connection died is lost.
        inbox_size: received messages held for the consumer; when full, reading from the
            socket stops (TCP backpressure), nothing is dropped.
        auth_timeout: seconds to wait for ``auth_ok``.
        resume_url: ``(url, positions, epochs) -> url`` for each reconnect (default
            :func:`since_query`).
        on_connect: ``async (ws, positions)`` after auth, e.g. to join rooms from ``positions``.
        **options: passed to ``websockets.asyncio.client.connect`` (headers, ping settings...).
    """

    def __init__(
        self, url: str, *, token: Token | None = None, policy: RetryPolicy | None = None,
        outbox_size: int = 1000, inbox_size: int = 1000, auth_timeout: float = 10.0,
        resume_url: ResumeUrl = since_query, on_connect: OnConnect | None = None,
        **options: Any,
    ) -> None:  # fmt: skip
        if outbox_size < 0 or inbox_size < 1:
            raise ValueError(f"need outbox_size >= 0, inbox_size >= 1; got {outbox_size}, "
                             f"{inbox_size}")  # fmt: skip
        self.url, self._token, self._options = url, token, options
        self.policy: RetryPolicy = policy or Backoff()
        self._outbox: deque[str | bytes] = deque()
        self._outbox_size, self._auth_timeout = outbox_size, auth_timeout
        self._resume_url, self._on_connect = resume_url, on_connect
        self._inbox_size = inbox_size  # the inbox itself is made on entering (then closed)
        self._send_lock = anyio.Lock()
        self._ws: ClientConnection | None = None
        self._gave_up: ClientGaveUp | None = None
        self._task_group: TaskGroup | None = None
        self.positions: dict[str, int] = {}  # room -> last seq received
        self.epochs: dict[str, str] = {}  # room -> its history's epoch, when announced
        self.connects = 0  # connections made (and authenticated)
        self.attempts = 0  # connection attempts
        self.last_disconnect: Disconnect | None = None

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def __aenter__(self) -> Self:
        self._inbox_in, self._inbox_out = anyio.create_memory_object_stream[Any](self._inbox_size)
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._run)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        if self._task_group is None:
            raise RuntimeError("__aexit__ without __aenter__")
        self._task_group.cancel_scope.cancel()
        try:
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                await self._task_group.__aexit__(exc_type, exc, tb)  # its scope's to handle
            else:  # the block's own error (ClientGaveUp...) leaves as itself, not in a group
                await self._task_group.__aexit__(None, None, None)
        finally:
            self._inbox_out.close()

    async def send(self, data: Any) -> None:
        """Send ``data`` (``str``, ``bytes``, or JSON-encodable) now, or once reconnected.

        Raises:
            OutboxFull: disconnected, and ``outbox_size`` messages are already waiting.
            ClientGaveUp: the client has stopped reconnecting.
            TypeError: ``data`` holds a value JSON has no form for.
            ValueError: ``data`` cannot be standard JSON or UTF-8 text (``NaN``, a lone
                surrogate...): refused here rather than failing the connection later.
        """
        if self._gave_up is not None:
            raise self._gave_up
        payload = _payload(data)
        async with self._send_lock:
            ws = self._ws
            if ws is not None and not self._outbox:
                try:
                    await ws.send(payload)
                    return
                except ConnectionClosed:
                    pass  # keep it for the next connection
            if len(self._outbox) >= self._outbox_size:
                raise OutboxFull(f"{len(self._outbox)} messages wait for a connection already")
            self._outbox.append(payload)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        if self._task_group is None:
            raise RuntimeError("iterate inside 'async with ResilientClient(...) as client:'")
        try:
            return await self._inbox_out.receive()
        except anyio.EndOfStream:
            if self._gave_up is not None:
                raise self._gave_up from None
            raise StopAsyncIteration from None

    async def _run(self) -> None:
        failures = 0
        try:
            while True:
                disconnect = await self._attempt(failures)
                failures = disconnect.failures
                self.last_disconnect = disconnect
                delay = self.policy.next_delay(disconnect)
                if delay is None:
                    self._give_up(disconnect)
                    return
                logger.info("reconnecting to %s in %.2f s after %s", self.url, delay, disconnect)
                await anyio.sleep(delay)
        finally:
            self._inbox_in.close()

    async def _attempt(self, failures: int) -> Disconnect:
        """One connection, from handshake to close; what ended it."""
        self.attempts += 1
        started: float | None = None
        phase = "connect"
        try:
            url = self._resume_url(self.url, self.positions, self.epochs)
            ws = await connect(url, **self._options)
            phase = "auth"
            try:
                await self._authenticate(ws)
                phase, started = "open", time.monotonic()  # up means authenticated
                await self._ready(ws)
                await self._read(ws)
            finally:
                self._ws = None
                await _close(ws)
        except Exception as exc:
            out = outcome_of(exc, phase, self.url)
        else:  # _read returns only by raising; kept for the type checker's sake
            out = Outcome(phase)
        finally:
            self._ws = None
        uptime = 0.0 if started is None else time.monotonic() - started
        failures = 1 if started is not None and self.policy.is_stable(uptime) else failures + 1
        return Disconnect(out.code, out.reason, failures, uptime, out.status, out.phase,
                          out.retry_after)  # fmt: skip

    async def _authenticate(self, ws: ClientConnection) -> None:
        if self._token is None:
            return
        with anyio.fail_after(self._auth_timeout):  # a token endpoint that hangs, too
            token = self._token if isinstance(self._token, str) else await self._token()
            await ws.send(dumps({"type": "auth", "token": token}))
            answer = await ws.recv()
        if _decode(answer) != {"type": "auth_ok"}:
            raise AuthFailed(f"expected {{'type': 'auth_ok'}}, got {str(answer)[:100]!r}")

    async def _ready(self, ws: ClientConnection) -> None:
        """Flush the outbox in order, then let ``send`` write directly."""
        self.connects += 1
        if self._on_connect is not None:
            await self._on_connect(ws, dict(self.positions))
        async with self._send_lock:
            while self._outbox:  # at most once: a message is gone once it was handed over
                await ws.send(self._outbox.popleft())
            self._ws = ws

    async def _read(self, ws: ClientConnection) -> None:
        while True:  # not `async for`: it hides a clean close (1000, 1001) from _attempt
            message = _decode(await ws.recv())
            if isinstance(message, dict):
                if message.get("type") == "ping" and len(message) == 1:
                    await ws.send('{"type":"pong"}')
                    continue
                if not self._first_time(message):
                    continue
            await self._inbox_in.send(message)

    def _first_time(self, message: dict[str, Any]) -> bool:
        """Track room positions (epoch and seq); ``False`` for a publication already
        delivered. ``joined`` and ``recovery_failed`` name the position the stream
        continues after; a room frame of another epoch starts a new numbering (the server
        sent ``recovery_failed`` before it)."""
        room, seq, kind = message.get("room"), message.get("seq"), message.get("type")
        if not isinstance(room, str):
            return True
        epoch = message.get("epoch")
        if kind in ("recovery_failed", "joined"):
            if not isinstance(seq, int) or not isinstance(epoch, str):
                self.positions.pop(room, None)  # no position named: take what comes
                self.epochs.pop(room, None)
            elif kind == "recovery_failed" or self.epochs.get(room) != epoch:
                self.positions[room], self.epochs[room] = seq, epoch
            else:
                self.positions.setdefault(room, seq)
            return True
        if not isinstance(seq, int) or "data" not in message:
            return True
        if isinstance(epoch, str) and self.epochs.get(room) != epoch:
            self.epochs[room] = epoch  # a new numbering: its first frame is new by definition
        elif seq <= self.positions.get(room, 0):
            return False
        self.positions[room] = seq
        return True

    def _give_up(self, disconnect: Disconnect) -> None:
        self._gave_up = ClientGaveUp(
            f"gave up on {self.url} after {disconnect.failures} failure(s); last: "
            f"{disconnect.describe()}",
            code=disconnect.code or 1006, reason=disconnect.reason[:123],
            attempts=self.attempts, status=disconnect.status, phase=disconnect.phase,
        )  # fmt: skip
        logger.warning("%s", self._gave_up)


async def _close(ws: ClientConnection) -> None:
    """Close ``ws`` even when cancelled: a close handshake of at most a second, then the
    socket is released whatever the peer did."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
        await ws.close()
    ws.transport.abort()


def _decode(raw: str | bytes) -> Any:
    """A frame's JSON value; its text (or bytes) when it is no JSON within our limits."""
    try:
        return loads(raw)
    except ValueError:
        return raw


def _payload(data: Any) -> str | bytes:
    if isinstance(data, bytes):
        return data
    if not isinstance(data, str):
        return dumps(data)
    if not data.isascii():
        data.encode("utf-8")  # UnicodeEncodeError (a ValueError) names a lone surrogate
    return data
