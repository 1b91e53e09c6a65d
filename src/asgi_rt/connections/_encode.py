"""Turn what users send into ASGI messages, once per message (not per connection)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["Dumps", "Frame", "compact_dumps", "encode"]

Dumps = Callable[[Any], str]


class Frame(dict[str, Any]):
    """A ``websocket.send`` message, shared by every recipient of one send or broadcast.

    A transport that frames messages itself (SSE) keeps its encoding in ``plain`` (unset
    until then, so that building a frame costs what building a dict does), so that it, too,
    is built once per message rather than once per recipient.
    """

    __slots__ = ("plain",)

    plain: bytes


def compact_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def encode(data: Any, dumps: Dumps) -> tuple[Frame, int]:
    """Return the ``websocket.send`` message for ``data`` and its payload size in bytes.

    ``str`` goes as a text frame, ``bytes``-like as binary, ``dict``/``list`` as JSON text.

    Raises:
        TypeError: for anything else.
    """
    if isinstance(data, str):
        return Frame(type="websocket.send", text=data), _utf8_len(data)
    if isinstance(data, bytes | bytearray | memoryview):
        payload = bytes(data)
        return Frame(type="websocket.send", bytes=payload), len(payload)
    if isinstance(data, dict | list):
        text = dumps(data)
        return Frame(type="websocket.send", text=text), _utf8_len(text)
    raise TypeError(f"expected str, bytes, dict or list to send, got {type(data).__name__}")


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))
