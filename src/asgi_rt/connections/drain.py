"""Graceful drain: on SIGTERM, close connections spread over a window, then let the
server shut down.

uvicorn answers SIGTERM by closing every WebSocket at once (1012) *before* the lifespan
shutdown runs, so a ``close_all`` in the lifespan finds nothing left to spread; and
thousands of clients told "restart" in the same millisecond reconnect in the same second
to whichever worker is left. :func:`drain_on_signal` steps in front of the server's signal
handler: the first signal starts ``close_all(window=...)``; once it is done, the server's
own handler runs and shutdown carries on as usual. A second signal skips the wait and
reaches the server too, so shutdown always ends as the server's own signals would end it
(uvicorn force-exits on a SIGINT after the first signal: Ctrl+C twice).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from .manager import ConnectionManager

__all__ = ["drain_on_signal"]

logger = logging.getLogger("asgi_rt.connections")

LATECOMER_POLL = 0.05  # seconds between looks for connections opened after the drain


@asynccontextmanager
async def drain_on_signal(
    manager: ConnectionManager, *, window: float = 10.0, code: int = 1012,
    reason: str = "service restart", timeout: float = 5.0,
    signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
) -> AsyncIterator[None]:  # fmt: skip
    """While the block runs (the app's lifespan), drain ``manager`` on ``signals`` first.

    Use it inside the lifespan, after entering the manager::

        async with rooms, drain_on_signal(rooms, window=10):
            yield

    Args:
        manager: whose connections to close.
        window: seconds over which the closes are spread (batches every 50 ms).
        code: the close code (1012 "service restart", as uvicorn sends, or 1001).
        reason: the close reason.
        timeout: seconds after the window for queues to drain before closing regardless.
        signals: the signals to step in front of.

    A second signal during the drain ends it: the first signal is handed to the server at
    once and the second one follows it, so the server does what two signals make it do
    (uvicorn: a graceful shutdown, forced when the second is SIGINT). Nothing is
    swallowed, so a shutdown stuck after the drain is forced as without us.

    Only works in the main thread (where signal handlers live); elsewhere it does nothing
    and says so in the log. The drain takes at most ``window + timeout`` plus twice the
    manager's ``close_timeout``: under a process manager that sends SIGKILL after a grace
    period, keep that below the period. It steps in front of handlers installed with
    ``signal.signal`` (uvicorn >= 0.29 does so); a server that uses
    ``loop.add_signal_handler`` sees the signal at once, and the drain runs alongside its
    shutdown instead of before it. New connections are still accepted during the window:
    have the load balancer stop sending traffic first (e.g. a failing readiness probe).
    Those are closed (``code``, ``reason``, no retry hint) at the end of the drain, and so
    is any that registers after it until the block ends, every 50 ms: a server that closed
    its connections once and waits for all of them to end (uvicorn) never waits for one it
    missed.
    """
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window!r}")
    if threading.current_thread() is not threading.main_thread():
        logger.warning("drain_on_signal: not in the main thread; no drain on signals")
        yield
        return
    wake = anyio.Event()
    relay = _Relay(_waker(wake))
    relay.install(signals)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_drain_then_hand_over, manager, wake, relay,
                          (code, reason, window, timeout))  # fmt: skip
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
    finally:
        relay.restore()


class _Relay:
    """Our signal handler: the first signal wakes the drain; any later one hands the
    first over at once (if the drain has not) and then reaches the server's handler as
    well. The server's handler sees every signal exactly once, none swallowed."""

    def __init__(self, wake_soon: Callable[[], None]) -> None:
        self.previous: dict[int, Any] = {}
        self.first: int | None = None
        self.handed_over = False
        self._wake_soon = wake_soon

    def install(self, signals: Sequence[signal.Signals]) -> None:
        for sig in signals:  # one by one: a signal arriving meanwhile finds its predecessor
            self.previous[sig] = signal.signal(sig, self.handle)

    def restore(self) -> None:
        for sig, old in self.previous.items():
            signal.signal(sig, old)

    def handle(self, sig: int, frame: FrameType | None) -> None:
        if self.first is None:
            self.first = sig
            self._wake_soon()
            return
        self.hand_over(self.first, frame)  # impatient: the shutdown the first one asked for
        _hand_over(sig, frame, self.previous.get(sig))  # then this one (uvicorn: force)

    def hand_over(self, sig: int, frame: FrameType | None) -> None:
        if not self.handed_over:
            self.handed_over = True
            _hand_over(sig, frame, self.previous.get(sig))


async def _drain_then_hand_over(
    manager: ConnectionManager, wake: anyio.Event, relay: _Relay,
    close: tuple[int, str, float, float],
) -> None:  # fmt: skip
    await wake.wait()
    code, reason, window, timeout = close
    logger.info("draining %d connections over %.1f s before shutdown", len(manager), window)
    try:
        await manager.close_all(code, reason, window=window, timeout=timeout)
        await _close_latecomers(manager, code, reason, timeout)
    finally:
        relay.hand_over(relay.first or signal.SIGTERM, None)
    # Until the lifespan ends. uvicorn closes the connections it knows of once, then waits
    # (without limit by default) for every connection to end; one it accepted in the same
    # loop turn as that sweep, which a herd coming back at the end of the drain makes
    # likely, escapes it and would keep the server up forever. No event says a connection
    # arrived, hence the poll.
    while True:
        await anyio.sleep(LATECOMER_POLL)
        await _close_latecomers(manager, code, reason, timeout)


async def _close_latecomers(
    manager: ConnectionManager, code: int, reason: str, timeout: float
) -> None:
    """Close the connections not asked to close yet: those opened since the drain began."""
    late = sum(1 for conn in manager if conn.state == "open")
    if late:
        logger.info("closing %d connections opened during the drain", late)
        await manager.close_all(code, reason, timeout=timeout)


def _hand_over(sig: int, frame: FrameType | None, old: Any) -> None:
    """Run the handler that was there before ours (the server's)."""
    if callable(old):
        old(sig, frame)
    elif old == signal.SIG_DFL:
        signal.signal(sig, signal.SIG_DFL)
        signal.raise_signal(sig)


def _waker(event: anyio.Event) -> Callable[[], None]:
    """A function that sets ``event`` from a signal handler (which must not touch the loop
    directly): through the event loop's thread-safe scheduling."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # trio
        import trio

        token = trio.lowlevel.current_trio_token()
        return lambda: token.run_sync_soon(event.set)

    def wake() -> None:
        loop.call_soon_threadsafe(event.set)

    return wake
