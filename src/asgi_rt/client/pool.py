"""ClientPool: a bounded pool of ``websockets`` client connections to one upstream."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

import anyio
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from ..exceptions import PoolExhausted
from ._breaker import Breaker
from .retry import Backoff

__all__ = ["ClientPool"]

logger = logging.getLogger("asgi_rt.client")

Connect = Callable[..., Awaitable[ClientConnection]]


class ClientPool:
    """Up to ``size`` connections to ``uri``, made lazily and reused.

    ``async with pool.connection() as ws:`` lends one connection exclusively. A pooled
    connection is checked before it is lent (a closed one is dropped and replaced); a
    connection whose block raised, or that is no longer open when returned, is closed and
    never pooled again. At most ``max_waiters`` callers wait for a free connection, each
    for at most ``acquire_timeout`` seconds; a caller that finds a free slot does not count,
    so a burst admits ``size + max_waiters`` callers.

    When the upstream is down, a circuit breaker keeps borrowers from hammering it: a
    failed connect opens the breaker for a delay drawn from ``backoff`` (between half and
    all of its cap, growing with consecutive failures); meanwhile ``connection()`` fails at
    once with :class:`~asgi_rt.exceptions.UpstreamUnavailable` (``retry_after`` says how
    long is left). Then one borrower tries again (the others still fail fast): success
    closes the breaker, failure opens it for longer.

    Args:
        uri: the upstream, ``ws://`` or ``wss://``.
        size: the most connections open at once (>= 1).
        acquire_timeout: seconds to wait for a connection (including connecting).
        max_waiters: callers allowed to wait at once; beyond, ``connection()`` fails at once.
        connect: the function that opens a connection (default ``websockets`` ``connect``).
        backoff: the breaker's delays (default ``Backoff(initial=0.5, maximum=30)``;
            only ``cap`` and ``rng`` are used).
        **options: passed to ``connect`` (headers, subprotocols, ping settings, ...).

    Raises:
        PoolExhausted: from ``connection()``, on timeout, too many waiters, or after ``aclose``.
        UpstreamUnavailable: from ``connection()`` (a ``PoolExhausted``): connecting failed,
            or the breaker is open; the connect error is its ``__cause__``.
    """

    def __init__(self, uri: str, *, size: int = 10, acquire_timeout: float = 5.0,
                 max_waiters: int | None = None, connect: Connect | None = None,
                 backoff: Backoff | None = None, **options: Any) -> None:  # fmt: skip
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if not acquire_timeout > 0:
            raise ValueError(f"acquire_timeout must be > 0, got {acquire_timeout!r}")
        self.uri, self.size, self.acquire_timeout = uri, size, acquire_timeout
        self.max_waiters = size * 4 if max_waiters is None else max_waiters
        self._connect: Connect = connect or _default_connect
        self._options = options
        self._slots = anyio.Semaphore(size)
        self._idle: deque[ClientConnection] = deque()
        self._waiting = 0
        self._breaker = Breaker(backoff or Backoff(initial=0.5, maximum=30.0))
        self._closed = False
        self.created = 0
        self.discarded = 0

    @property
    def waiting(self) -> int:
        """Callers waiting for a free connection now."""
        return self._waiting

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[ClientConnection]:
        """Borrow a connection for the block; see the class docstring for the rules."""
        await self._acquire_slot()
        ws: ClientConnection | None = None
        healthy = False
        try:
            with anyio.fail_after(self.acquire_timeout):
                ws = await self._take()
            yield ws
            healthy = True
        except TimeoutError:
            if ws is None:
                raise PoolExhausted(f"could not connect to {self.uri} in time") from None
            raise
        finally:
            if ws is not None:
                await self._give_back(ws, healthy)
            self._slots.release()

    async def aclose(self) -> None:
        """Close every pooled connection; borrowed ones are closed when given back."""
        self._closed = True
        while self._idle:
            await _close(self._idle.popleft())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        await self.aclose()

    async def _acquire_slot(self) -> None:
        if self._closed:
            raise PoolExhausted("the pool is closed")
        try:
            self._slots.acquire_nowait()  # a free slot: not a waiter
            return
        except anyio.WouldBlock:
            pass
        if self._waiting >= self.max_waiters:
            raise PoolExhausted(f"{self._waiting} callers already wait for a connection")
        self._waiting += 1
        try:
            with anyio.fail_after(self.acquire_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise PoolExhausted(f"no free connection within {self.acquire_timeout} s") from None
        finally:
            self._waiting -= 1

    async def _take(self) -> ClientConnection:
        while self._idle:
            ws = self._idle.pop()  # the most recently used is the most likely alive
            if ws.state is State.OPEN:
                return ws
            self.discarded += 1
            await _close(ws)
        with self._breaker.attempt(self.uri):
            ws = await self._connect(self.uri, **self._options)
        self.created += 1
        return ws

    async def _give_back(self, ws: ClientConnection, healthy: bool) -> None:
        if healthy and not self._closed and ws.state is State.OPEN:
            self._idle.append(ws)
            return
        self.discarded += 1
        with anyio.CancelScope(shield=True):
            await _close(ws)


async def _default_connect(uri: str, **options: Any) -> ClientConnection:
    return await connect(uri, **options)


async def _close(ws: ClientConnection) -> None:
    with anyio.move_on_after(2):
        try:
            await ws.close()
        except Exception:  # already broken; nothing to tell the peer
            logger.debug("closing a broken pooled connection failed", exc_info=True)
