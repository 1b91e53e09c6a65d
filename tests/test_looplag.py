"""LoopLagMonitor: a handler that blocks the loop is measured and named."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry

from asgi_rt import Metrics, TelemetryMiddleware
from asgi_rt.looplag import LoopLagMonitor

from ._poll import await_for

pytestmark = pytest.mark.anyio


def ticks(metrics: Metrics) -> float:
    """How many lag samples the monitor has taken (what a scrape shows)."""
    count = metrics.registry.get_sample_value("asgi_rt_event_loop_lag_seconds_count")
    return count or 0.0


def blocking_frame_handler() -> None:
    time.sleep(0.3)  # the bug being detected: blocking I/O on the event loop


async def test_a_blocked_loop_is_measured_and_its_stack_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics(CollectorRegistry())
    with caplog.at_level(logging.WARNING, logger="asgi_rt.looplag"):
        async with LoopLagMonitor(metrics=metrics, interval=0.05, threshold=0.1) as monitor:
            await await_for(lambda: ticks(metrics) >= 1, what="the monitor's first tick")
            before = ticks(metrics)
            blocking_frame_handler()
            await await_for(lambda: ticks(metrics) > before, what="a tick after the stall")
    assert monitor.stalls == 1
    assert monitor.max_lag >= 0.25
    assert "blocking_frame_handler" in caplog.text
    assert "event loop blocked for over" in caplog.text
    buckets = metrics.registry.get_sample_value("asgi_rt_event_loop_lag_seconds_bucket",
                                                {"le": "0.25"})  # fmt: skip
    count = metrics.registry.get_sample_value("asgi_rt_event_loop_lag_seconds_count")
    assert count is not None and buckets is not None and count > buckets  # one tick was late


async def test_a_healthy_loop_reports_nothing(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics(CollectorRegistry())
    with caplog.at_level(logging.WARNING, logger="asgi_rt.looplag"):
        # a threshold no scheduler hiccup of a loaded machine reaches: only a real block would
        async with LoopLagMonitor(metrics=metrics, interval=0.02, threshold=10.0) as monitor:
            await await_for(lambda: ticks(metrics) >= 5, what="five ticks")
    assert monitor.stalls == 0
    assert caplog.text == ""


async def test_telemetry_runs_the_monitor_for_the_lifespan() -> None:
    metrics = Metrics(CollectorRegistry())
    started = anyio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        started.set()
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    mw = TelemetryMiddleware(app, metrics=metrics)
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    release = anyio.Event()

    async def receive() -> dict[str, str]:
        if len(inbox) == 1:
            await release.wait()
        return inbox.pop(0)

    async def send(message: Any) -> None:
        pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(mw, {"type": "lifespan"}, receive, send)
        await started.wait()
        await await_for(lambda: ticks(metrics) >= 1, what="the monitor's first tick")
        release.set()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="> 0"):
        LoopLagMonitor(threshold=0)
