"""Waiting for a condition that has no event to wait on: poll it, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` from a plain thread until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.02)  # poll interval, bounded by the deadline above


async def await_for(
    predicate: Callable[[], bool], timeout: float = 10.0, what: str = "", interval: float = 0.01
) -> None:
    """Poll ``predicate`` in async code (asyncio or trio), yielding to other tasks meanwhile."""
    with anyio.move_on_after(timeout) as scope:
        while not predicate():
            await anyio.sleep(interval)  # poll interval, bounded by the deadline scope
    if scope.cancelled_caught:
        raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


async def await_true(
    probe: Callable[[], Awaitable[bool]], timeout: float = 30.0, what: str = "",
    interval: float = 0.1,
) -> None:  # fmt: skip
    """``await_for`` for a condition that takes I/O to check (an HTTP probe, say)."""
    with anyio.move_on_after(timeout) as scope:
        while not await probe():
            await anyio.sleep(interval)  # poll interval, bounded by the deadline scope
    if scope.cancelled_caught:
        raise AssertionError(f"timed out after {timeout} s waiting for {what or probe}")
