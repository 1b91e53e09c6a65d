"""TypedDicts for the ASGI WebSocket messages asgi_rt builds (and shares between recipients).

Modelled on ``uvicorn/_types.py``; only the messages we touch are spelled out.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

__all__ = [
    "EVENTS_KEY",
    "WebSocketSendEvent",
]

EVENTS_KEY = "asgi_rt.events"
"""The key of an ``http.response.body`` message of an asgi_rt event stream that says how
many SSE events the chunk carries (0 for a comment or a ``retry:`` field); telemetry reads
it instead of parsing the body. Servers ignore keys they do not know."""


class WebSocketSendEvent(TypedDict):
    type: Literal["websocket.send"]
    text: NotRequired[str | None]
    bytes: NotRequired[bytes | None]
