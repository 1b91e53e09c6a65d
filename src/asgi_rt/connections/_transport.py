"""What a :class:`Connection` needs from the socket under it: the transport contract.

Both transports answer the same three questions:

- how a frame is encoded for the wire: a WebSocket sends the ``websocket.send`` message
  as it is (the server frames it); a :class:`DataTransport` says so in ``encode`` (SSE: one
  ``data:`` event, cached inside the transport, never on the shared frame);
- how it is sent: ``send`` (checked) or the data path (``send_data``; for Starlette's
  ``WebSocket`` the adapter in :mod:`._starlette`);
- how close is expressed: ``send({"type": "websocket.close", "code", "reason"})``; SSE
  writes it as a final ``event: close`` with ``{"code", "reason"}`` and ends the body.

Starlette's ``WebSocket`` is one; an SSE event stream (:mod:`asgi_rt._eventstream`) is
the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from starlette.types import Message
from starlette.websockets import WebSocketState

__all__ = ["DataTransport", "Transport"]


class Transport(Protocol):
    """A message transport with WebSocket semantics: accept, send, receive, close.

    ``send`` takes ``websocket.send`` and ``websocket.close`` messages (a close is
    expressed as a ``websocket.close`` message); ``receive`` returns ``websocket.receive``
    messages and finally ``websocket.disconnect``.
    """

    application_state: WebSocketState

    async def accept(
        self, subprotocol: str | None = None, headers: Iterable[tuple[bytes, bytes]] | None = None
    ) -> None: ...

    async def send(self, message: Message) -> None: ...

    async def receive(self) -> Message: ...


@runtime_checkable
class DataTransport(Transport, Protocol):
    """A transport with its own wire encoding and a data path of its own.

    ``send_data`` writes one ``websocket.send`` message (never a close) without the
    checks ``send`` makes; ``encode`` is the wire form of such a message (an SSE event).
    ``kind`` names the transport (``"sse"``); a Starlette ``WebSocket`` is ``"websocket"``.
    """

    kind: str

    async def send_data(self, message: Message) -> None: ...

    def encode(self, message: Message) -> bytes: ...
