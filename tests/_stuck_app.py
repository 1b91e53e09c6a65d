"""An app whose shutdown gets stuck, for ``uvicorn tests._stuck_app:app``.

``/hold`` registers with a manager that drains over 60 s on SIGTERM/SIGINT (a drain that
outlasts any patience); ``/stuck`` accepts and then never returns, not even when its
socket is closed, so uvicorn's graceful shutdown waits for it forever.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import ConnectionManager, drain_on_signal

manager = ConnectionManager()


async def hold(websocket: WebSocket) -> None:
    async with manager.connect(websocket) as conn:
        async for _ in conn:
            pass


async def stuck(websocket: WebSocket) -> None:
    await websocket.accept()
    await anyio.sleep_forever()


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with manager, drain_on_signal(manager, window=60):
        yield


app = Starlette(routes=[WebSocketRoute("/hold", hold), WebSocketRoute("/stuck", stuck)],
                lifespan=lifespan)  # fmt: skip
