"""TypedDicts for the ASGI WebSocket messages asgi_rt builds (and shares between recipients).

Modelled on ``uvicorn/_types.py``; only the messages we touch are spelled out.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

__all__ = [
    "WebSocketSendEvent",
]


class WebSocketSendEvent(TypedDict):
    type: Literal["websocket.send"]
    text: NotRequired[str | None]
    bytes: NotRequired[bytes | None]
