"""Echo apps for the Autobahn conformance run (tests/test_conformance.py).

kosoku's fuzzingclient opens every case on ``ws://host:port/`` (no query string, no
``Origin``), so both apps echo on ``/``: text as text, bytes as bytes, until the peer leaves.
``bare`` is plain Starlette, the baseline; ``stacked`` is the same route through
TelemetryMiddleware (outermost) and HandshakeMiddleware, echoing through a ConnectionManager.
Run as ``uvicorn tests._conformance_app:stacked``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from asgi_rt import ConnectionManager, HandshakeMiddleware, Metrics, TelemetryMiddleware

__all__ = ["bare", "stacked"]

# uvicorn's own --ws-max-size default, so that the manager is never the tighter limit: the
# cases run here send at most 64 KiB, but 9.* (excluded) goes up to 16 MiB.
MAX_MESSAGE_SIZE = 16 * 1024 * 1024


async def plain_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while (message := await websocket.receive())["type"] != "websocket.disconnect":
            text = message.get("text")
            if text is not None:
                await websocket.send_text(text)
            else:
                await websocket.send_bytes(message.get("bytes") or b"")
    except WebSocketDisconnect:  # a send after the server failed the connection
        return


manager = ConnectionManager(max_message_size=MAX_MESSAGE_SIZE)


async def managed_echo(websocket: WebSocket) -> None:
    async with manager.connect(websocket) as conn:
        async for message in conn:
            await conn.send(message)


bare = Starlette(routes=[WebSocketRoute("/", plain_echo)])

stacked = TelemetryMiddleware(
    HandshakeMiddleware(
        Starlette(routes=[WebSocketRoute("/", managed_echo)]),
        allowed_origins=["*"],
        allow_missing_origin=True,
    ),
    metrics=Metrics(registry=CollectorRegistry()),
)
