"""drain_on_signal in process, under asyncio and trio: it steps in front of the server's
signal handler, closes connections first, then hands the signal over."""

from __future__ import annotations

import signal
import time
from types import FrameType

import anyio
import anyio.lowlevel
import pytest

from asgi_rt import ConnectionManager, drain_on_signal
from asgi_rt._retry_hint import retry_hint, with_retry_hint
from asgi_rt.testing import websocket_session

from .._poll import await_for
from .test_manager import hold_app

pytestmark = pytest.mark.anyio


async def test_a_signal_closes_connections_then_reaches_the_servers_handler() -> None:
    manager, opened, handed_over = ConnectionManager(), anyio.Event(), []

    def server_handler(sig: int, frame: FrameType | None) -> None:
        handed_over.append((sig, [c.state for c in manager]))

    original = signal.signal(signal.SIGTERM, server_handler)
    try:
        async with manager, drain_on_signal(manager, window=0.2):
            async with websocket_session(hold_app(manager, opened), "/ws") as ws:
                await opened.wait()
                signal.raise_signal(signal.SIGTERM)
                message = await ws.receive()
                await await_for(lambda: handed_over != [], what="the server's handler")
        assert signal.getsignal(signal.SIGTERM) is server_handler  # restored on exit
    finally:
        signal.signal(signal.SIGTERM, original)
    assert (message["type"], message["code"]) == ("websocket.close", 1012)
    hint = retry_hint(message["reason"])  # the rest of the window plus a share of one more
    assert message["reason"].startswith("service restart; retry in ")
    assert hint is not None and 0 <= hint <= 0.4 + 0.05, message["reason"]
    assert handed_over in ([(signal.SIGTERM, [])], [(signal.SIGTERM, ["closed"])])  # after


async def test_a_connection_opened_after_the_hand_over_is_closed_too() -> None:
    """uvicorn closes the connections it knows of once, then waits for every one to end;
    one accepted in the same loop turn as that sweep (a herd coming back as the drain ends)
    escaped it and kept the server up forever. The drain closes it."""
    manager, handed_over = ConnectionManager(), []
    original = signal.signal(signal.SIGTERM, lambda sig, frame: handed_over.append(sig))
    try:
        async with manager, drain_on_signal(manager, window=0.05):
            signal.raise_signal(signal.SIGTERM)
            await await_for(lambda: handed_over != [], what="the server's handler")
            with anyio.fail_after(10):  # before the fix it stayed open
                async with websocket_session(hold_app(manager), "/ws") as ws:
                    message = await ws.receive()
    finally:
        signal.signal(signal.SIGTERM, original)
    assert (message["type"], message["code"], message["reason"]) == (
        "websocket.close",
        1012,
        "service restart",
    )


async def test_a_second_signal_hands_over_at_once_and_later_ones_are_not_swallowed() -> None:
    manager, handed_over = ConnectionManager(), []
    original = signal.signal(signal.SIGTERM, lambda sig, frame: handed_over.append(sig))
    original_int = signal.signal(signal.SIGINT, lambda sig, frame: handed_over.append(sig))
    try:
        async with manager, drain_on_signal(manager, window=30):
            signal.raise_signal(signal.SIGTERM)  # starts a (long) drain
            signal.raise_signal(signal.SIGINT)  # impatient: the first, then this one
            assert handed_over == [signal.SIGTERM, signal.SIGINT]
            signal.raise_signal(signal.SIGINT)  # and every later one: none is swallowed
            assert handed_over == [signal.SIGTERM, signal.SIGINT, signal.SIGINT]
    finally:
        signal.signal(signal.SIGTERM, original)
        signal.signal(signal.SIGINT, original_int)


def test_window_is_checked() -> None:
    async def enter() -> None:
        async with drain_on_signal(ConnectionManager(), window=-1):
            pass

    with pytest.raises(ValueError, match="window"):
        anyio.run(enter)


async def test_leaving_the_manager_spreads_its_closes_over_drain_window() -> None:
    manager, closed_at = ConnectionManager(drain_window=0.4), []

    async def client(i: int) -> None:
        async with websocket_session(hold_app(manager), f"/ws?id={i}") as ws:
            message = await ws.receive()
            closed_at.append((message["code"], time.monotonic()))

    async with anyio.create_task_group() as tg:
        async with manager:
            for i in range(8):
                tg.start_soon(client, i)
            await await_for(lambda: len(manager) == 8, what="eight connections")
    times = sorted(at for _, at in closed_at)
    assert {code for code, _ in closed_at} == {1001}
    assert times[-1] - times[0] >= 0.2  # eight batches 50 ms apart; they can only come later


def test_drain_window_is_checked() -> None:
    with pytest.raises(ValueError, match="drain_window"):
        ConnectionManager(drain_window=-1)


async def test_the_servers_handler_sees_each_signal_once() -> None:
    manager, handed_over = ConnectionManager(), []
    original = signal.signal(signal.SIGTERM, lambda sig, frame: handed_over.append(sig))
    try:
        async with manager, drain_on_signal(manager, window=0.05):
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
            await anyio.lowlevel.checkpoint()  # the drain starts; leaving the block ends it,
            # and it must not hand the first signal over a second time
    finally:
        signal.signal(signal.SIGTERM, original)
    assert handed_over == [signal.SIGTERM, signal.SIGTERM]


def test_a_retry_hint_fits_a_close_reason() -> None:
    reason = with_retry_hint("é" * 100, 12.34)
    assert len(reason.encode()) <= 123 and reason.endswith("; retry in 12.3s")
    assert retry_hint(reason) == 12.3
    assert retry_hint("service restart") is None
