"""Event-loop lag: the most common WebSocket incident in Python is a blocked loop.

A handler that calls blocking code (``time.sleep``, a sync DB driver, heavy JSON) delays
every connection's frames and pings. :class:`LoopLagMonitor` measures how late a
periodic timer fires (``asgi_rt_event_loop_lag_seconds``) and, from a watchdog thread,
logs a WARNING with the blocked thread's stack while the loop is held longer than
``threshold``: the stack shows the code that is blocking, not the timer that noticed.

Start it alone (``async with LoopLagMonitor(metrics=metrics):`` in a lifespan) or let
``TelemetryMiddleware`` run it for the app's lifespan (the default).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from types import TracebackType
from typing import Any, Self

import anyio

from ._background import Background

__all__ = ["LoopLagMonitor"]

logger = logging.getLogger("asgi_rt.looplag")


class LoopLagMonitor:
    """Measure event-loop lag and report what holds the loop.

    Args:
        metrics: a :class:`~asgi_rt.metrics.Metrics` to observe the lag into (optional).
        interval: seconds between timer ticks (the resolution; 10 ticks/s by default).
        threshold: seconds the loop may be held before a WARNING with its stack.
    """

    def __init__(
        self, *, metrics: Any = None, interval: float = 0.1, threshold: float = 0.1
    ) -> None:
        if not interval > 0 or not threshold > 0:
            raise ValueError("interval and threshold must be > 0")
        self.interval, self.threshold = interval, threshold
        self.lag = None if metrics is None else metrics.event_loop_lag.labels()
        self.max_lag = 0.0
        self.stalls = 0
        self._beat = time.monotonic()
        self._loop_thread = 0
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._background = Background()

    async def __aenter__(self) -> Self:
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        self._stop.clear()
        self._watchdog = threading.Thread(target=self._watch, name="asgi_rt-looplag", daemon=True)
        self._watchdog.start()
        await self._background.start(self._tick)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        await self._background.stop()
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(self.threshold + 1.0)
            self._watchdog = None

    async def _tick(self) -> None:
        while True:
            started = time.monotonic()
            await anyio.sleep(self.interval)
            now = time.monotonic()
            self._beat = now
            lag = max(0.0, now - started - self.interval)
            self.max_lag = max(self.max_lag, lag)
            if self.lag is not None:
                self.lag.observe(lag)

    def _watch(self) -> None:
        reported = 0.0  # the beat of the stall already reported
        while not self._stop.wait(self.threshold / 2):
            beat = self._beat
            held = time.monotonic() - beat - self.interval
            if held > self.threshold and beat != reported:
                reported = beat
                self.stalls += 1
                logger.warning("event loop blocked for over %.0f ms; it is running:\n%s",
                               held * 1000, self._loop_stack())  # fmt: skip

    def _loop_stack(self) -> str:
        frame = sys._current_frames().get(self._loop_thread)
        return "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)"
