"""Run a send coroutine inline until it first suspends (asyncio only).

Almost every send to a healthy peer completes without suspending: the transport
is writable, so the ASGI server writes the frame and returns. Handing each such
send to a per-connection task costs one task wake-up per message per connection,
which is what makes a queue-per-client fan-out slower than the naive loop.

So the broadcasting task steps the coroutine itself (``coro.send(None)``, in
``Sender.deliver``). If it finishes, nothing else
happens. If it yields (the transport pushed back), the half-run coroutine is
wrapped in :class:`Resume` and handed to the connection's writer task, which
awaits it like any other awaitable; later messages queue behind it. This is what
``asyncio.eager_task_factory`` does natively on 3.12, without a task per send.

It relies on asyncio's coroutine protocol (a suspended coroutine yields a future
or ``None`` to its task), so it is never used under trio.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Generator
from typing import Any

__all__ = ["Resume"]


class Resume:
    """An awaitable that finishes a send coroutine that was stepped once and suspended.

    Awaiting it from a task passes the coroutine's pending future up to that task,
    and sends results, exceptions and cancellation back down, exactly as the task
    would have done had it run the coroutine from the start.
    """

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, None, None]:
        coro, yielded = self._coro, self._yielded
        while True:
            try:
                yield yielded
            except BaseException as exc:  # cancellation or an error from the awaited future
                resume: Callable[[Any], Any] = coro.throw
                arg: Any = exc
            else:
                resume = coro.send
                arg = None
            try:
                yielded = resume(arg)
            except StopIteration:
                return

    def close(self) -> None:
        """Abandon the coroutine (it sees ``GeneratorExit``), for teardown paths."""
        self._coro.close()
