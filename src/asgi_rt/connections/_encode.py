"""Turn what users send into ASGI messages, once per message (not per connection)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..types import WebSocketSendEvent

__all__ = ["Dumps", "compact_dumps", "encode"]

Dumps = Callable[[Any], str]


def compact_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def encode(data: Any, dumps: Dumps) -> tuple[WebSocketSendEvent, int]:
    """Return the ``websocket.send`` message for ``data`` and its payload size in bytes.

    ``str`` goes as a text frame, ``bytes``-like as binary, ``dict``/``list`` as JSON text.

    Raises:
        TypeError: for anything else.
    """
    if isinstance(data, str):
        return {"type": "websocket.send", "text": data}, _utf8_len(data)
    if isinstance(data, bytes | bytearray | memoryview):
        payload = bytes(data)
        return {"type": "websocket.send", "bytes": payload}, len(payload)
    if isinstance(data, dict | list):
        text = dumps(data)
        return {"type": "websocket.send", "text": text}, _utf8_len(text)
    raise TypeError(f"expected str, bytes, dict or list to send, got {type(data).__name__}")


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))
