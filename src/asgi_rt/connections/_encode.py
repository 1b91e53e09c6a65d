"""Turn what users send into ASGI messages, once per message (not per connection)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._json import dumps, shorten

__all__ = ["Dumps", "Frame", "compact_dumps", "encode"]

Dumps = Callable[[Any], str]


class Frame(dict[str, Any]):
    """A ``websocket.send`` message, shared by every recipient of one send or broadcast.

    A transport that frames messages itself (SSE) may cache its encoding keyed by the
    frame's identity: one frame, one encoding, whoever receives it.
    """

    __slots__ = ()


def compact_dumps(value: Any) -> str:
    """Compact JSON that any parser accepts; refuses ``NaN``, lone surrogates and the like
    with a ``ValueError``/``TypeError`` naming the value and where it is."""
    return dumps(value)


def encode(data: Any, dumps: Dumps) -> tuple[Frame, int]:
    """Return the ``websocket.send`` message for ``data`` and its payload size in bytes.

    ``str`` goes as a text frame, ``bytes``-like as binary, ``dict``/``list`` as JSON text.

    Raises:
        TypeError: for anything else, or a value JSON has no form for.
        ValueError: text with a lone surrogate (it has no UTF-8 encoding, and the socket
            that tried to write it would fail), or JSON data that ``dumps`` refuses.
    """
    if isinstance(data, str):
        return Frame(type="websocket.send", text=data), _utf8_len(data, "send as text")
    if isinstance(data, bytes | bytearray | memoryview):
        payload = bytes(data)
        return Frame(type="websocket.send", bytes=payload), len(payload)
    if isinstance(data, dict | list):
        text = dumps(data)
        return Frame(type="websocket.send", text=text), _utf8_len(text, "encode as JSON")
    raise TypeError(f"expected str, bytes, dict or list to send, got {type(data).__name__}")


def _utf8_len(text: str, what: str) -> int:
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # a custom ``dumps`` let it through, or a str payload
        raise ValueError(
            f"cannot {what}: lone surrogate in {shorten(text)} (it has no UTF-8 encoding) "
            f"at character {exc.start}"
        ) from None
