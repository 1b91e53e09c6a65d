"""A task group owned by an object for the span of its ``async with`` block."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from anyio.abc import TaskGroup

__all__ = ["Background"]


class Background:
    """Entered by the owner's ``__aenter__`` (``start``), left by its ``__aexit__`` (``stop``):
    the tasks are cancelled and awaited there, never left running."""

    __slots__ = ("_task_group",)

    def __init__(self) -> None:
        self._task_group: TaskGroup | None = None

    async def start(self, *functions: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        for function in functions:
            task_group.start_soon(function)
        self._task_group = task_group

    async def stop(self) -> None:
        task_group, self._task_group = self._task_group, None
        if task_group is not None:
            task_group.cancel_scope.cancel()
            await task_group.__aexit__(None, None, None)
