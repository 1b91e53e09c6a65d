"""The one place that reaches under a transport's public methods (Starlette's privates).

Starlette's ``WebSocket.send``/``receive`` add a coroutine frame and state checks per
frame; data frames need neither (the connection tracks its state itself), so frames go
straight to the ASGI callables underneath, which still include every middleware. Close
frames keep using ``WebSocket.send`` so that Starlette's own state stays right.

Any other transport offers its data path publicly: :class:`~._transport.DataTransport`
(``send_data``), or else its plain ``send``/``receive``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

from starlette.types import Message
from starlette.websockets import WebSocket

from .._sendseam import SendSeam, seam_of
from ._sender import SendCoroutine
from ._transport import DataTransport, Transport

__all__ = ["data_receive", "data_send", "send_seam"]


def data_send(transport: Transport) -> SendCoroutine:
    """The coroutine function data frames are written with."""
    if isinstance(transport, WebSocket):
        # Starlette private: the ASGI send, under every middleware. Typed as returning an
        # Awaitable; the servers' sends are coroutine functions, which the inline path needs.
        return cast(SendCoroutine, transport._send)
    if isinstance(transport, DataTransport):
        return transport.send_data
    return transport.send


def data_receive(transport: Transport) -> Callable[[], Awaitable[Message]]:
    """The coroutine function frames are read with (the connection tracks disconnects)."""
    if isinstance(transport, WebSocket):
        return transport._receive  # Starlette private: the ASGI receive
    return transport.receive


def send_seam(transport: Transport) -> SendSeam | None:
    """The seam asgi_rt's outermost middleware installed under a WebSocket, if any."""
    if isinstance(transport, WebSocket):
        return seam_of(transport.scope)
    return None
