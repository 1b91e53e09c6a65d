"""TypedDicts for the ASGI WebSocket messages asgi_rt builds or reads.

Modelled on ``uvicorn/_types.py``; only the messages we touch are spelled out.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

__all__ = [
    "WebSocketCloseEvent",
    "WebSocketReceiveEvent",
    "WebSocketSendEvent",
]


class WebSocketSendEvent(TypedDict):
    type: Literal["websocket.send"]
    text: NotRequired[str | None]
    bytes: NotRequired[bytes | None]


class WebSocketCloseEvent(TypedDict):
    type: Literal["websocket.close"]
    code: int
    reason: NotRequired[str | None]


class WebSocketReceiveEvent(TypedDict):
    type: Literal["websocket.receive"]
    text: NotRequired[str | None]
    bytes: NotRequired[bytes | None]
