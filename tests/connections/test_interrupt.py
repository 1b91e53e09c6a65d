"""The cheap receive interrupt on asyncio: a cancel we asked for never outlives the receive
it was meant for, even when code under the receive swallowed it (websockets' legacy close
does while it waits for the peer's close frame)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from asgi_rt.connections._interrupt import INTERRUPTED, Interruptible

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def interrupt_while_waiting(
    receive: Callable[[], Awaitable[str]], waiting: asyncio.Event
) -> tuple[object, int]:
    """Interrupt ``receive`` once it waits; what the handler got and the cancels it still
    has pending after its next await (which a left-over cancel would have hit)."""
    interruptible = Interruptible(on_asyncio=True)

    async def handler() -> tuple[object, int]:
        result = await interruptible.wait(receive)
        await asyncio.sleep(0)  # the fix: this await used to raise CancelledError
        task = asyncio.current_task()
        assert task is not None
        return result, task.cancelling()

    task = asyncio.create_task(handler())
    await waiting.wait()
    interruptible.interrupt()
    return await task


async def test_an_interrupt_swallowed_under_the_receive_does_not_hit_the_next_await() -> None:
    waiting = asyncio.Event()

    async def swallowing_receive() -> str:
        waiting.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:  # a library that catches the cancel and returns
            return "closed quietly"
        return "never"

    assert await interrupt_while_waiting(swallowing_receive, waiting) == ("closed quietly", 0)


async def test_an_interrupted_receive_says_so_and_leaves_no_cancel_behind() -> None:
    waiting = asyncio.Event()

    async def receive() -> str:
        waiting.set()
        await asyncio.Event().wait()
        return "never"

    assert await interrupt_while_waiting(receive, waiting) == (INTERRUPTED, 0)


async def test_a_real_cancel_during_a_swallowed_interrupt_still_cancels() -> None:
    interruptible = Interruptible(on_asyncio=True)
    waiting = asyncio.Event()

    async def swallowing_receive() -> str:
        waiting.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "closed quietly"
        return "never"

    async def handler() -> None:
        await interruptible.wait(swallowing_receive)
        await asyncio.Event().wait()  # only a real cancel ends this

    task = asyncio.create_task(handler())
    await waiting.wait()
    interruptible.interrupt()
    task.cancel()  # the server shutting down, at the same moment
    done, _ = await asyncio.wait({task}, timeout=30)  # a swallowed real cancel would hang
    assert done == {task}
    assert task.cancelled()
