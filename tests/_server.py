"""A real uvicorn on an ephemeral loopback port, run in a thread with its own loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import uvicorn
from starlette.types import ASGIApp

from ._poll import await_for, wait_for

__all__ = ["RunningServer", "await_for", "wait_for"]

T = TypeVar("T")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class RunningServer:
    """Handle on a uvicorn serving ``app``; ``call`` runs code on the server's loop."""

    def __init__(self, app: ASGIApp, *, ws: str = "websockets", sndbuf: int | None = None,
                 ping_interval: float | None = None, port: int = 0,
                 **config: Any) -> None:  # fmt: skip
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sndbuf is not None:  # inherited by accepted sockets: a small kernel send buffer
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.sock.bind(("127.0.0.1", port))
        self.port: int = self.sock.getsockname()[1]
        self.config = uvicorn.Config(
            app, ws=ws, ws_ping_interval=ping_interval, ws_ping_timeout=ping_interval,
            log_level="warning", timeout_graceful_shutdown=3, **{"lifespan": "off", **config},
        )  # fmt: skip
        self.server = uvicorn.Server(self.config)
        self.loop_errors: list[dict[str, Any]] = []
        self.log = _Collect()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        logging.getLogger("uvicorn.error").addHandler(self.log)
        self._thread.start()
        wait_for(lambda: self.server.started or not self._thread.is_alive(), what="uvicorn")
        if not self.server.started:
            raise RuntimeError("uvicorn did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(15)
        self.sock.close()
        logging.getLogger("uvicorn.error").removeHandler(self.log)
        if self._thread.is_alive():
            raise RuntimeError("uvicorn did not stop within 15 s")

    def call(self, fn: Callable[[], Coroutine[Any, Any, T]], timeout: float = 10) -> T:
        """Run ``fn()`` on the server's loop and return its result (from the test thread)."""
        assert self.loop is not None
        fut: Future[T] = asyncio.run_coroutine_threadsafe(fn(), self.loop)
        return fut.result(timeout)

    async def acall(self, fn: Callable[[], Coroutine[Any, Any, T]], timeout: float = 10) -> T:
        """``call`` for async tests: awaits without blocking the test's own loop."""
        assert self.loop is not None
        fut = asyncio.run_coroutine_threadsafe(fn(), self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)

    def task_count(self) -> int:
        async def count() -> int:
            return len(asyncio.all_tasks()) - 1  # not this one

        return self.call(count)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        try:
            loop.run_until_complete(self.server.serve(sockets=[self.sock]))
        finally:
            gc.collect()  # surface "Task exception was never retrieved" into loop_errors
            loop.close()
