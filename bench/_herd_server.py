"""The server of ``bench.reconnect_herd``: ``uvicorn bench._herd_server:app``.

``/ws`` holds a registered connection. ``HERD_DRAIN_WINDOW`` (seconds) installs
``drain_on_signal``; ``HERD_RETRY_HINT=0`` drops the suggested delay from its closes.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import Connection, ConnectionManager, drain_on_signal

manager = ConnectionManager()
_window = os.environ.get("HERD_DRAIN_WINDOW")
_hint = os.environ.get("HERD_RETRY_HINT", "1") == "1"


async def hold(websocket: WebSocket) -> None:
    async with manager.connect(websocket) as conn:
        async for _ in conn:
            pass


class _NoHint:
    """``manager`` as ``drain_on_signal`` sees it, closing without the retry hint."""

    def __len__(self) -> int:
        return len(manager)

    def __iter__(self) -> Iterator[Connection]:
        return iter(manager)

    async def close_all(self, code: int, reason: str, *, window: float, timeout: float) -> None:
        await manager.close_all(code, reason, window=window, timeout=timeout, retry_hint=False)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(manager)
        if _window is not None:
            target: Any = manager if _hint else _NoHint()
            await stack.enter_async_context(drain_on_signal(target, window=float(_window)))
        yield


app = Starlette(routes=[WebSocketRoute("/ws", hold)], lifespan=lifespan)
