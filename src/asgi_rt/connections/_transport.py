"""What a :class:`Connection` needs from the socket under it.

Starlette's ``WebSocket`` is one; an SSE event stream (:mod:`asgi_rt.sse`) is the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from starlette.types import Message
from starlette.websockets import WebSocketState

__all__ = ["Transport"]


class Transport(Protocol):
    """A message transport with WebSocket semantics: accept, send, receive, close.

    ``send`` takes ``websocket.send`` and ``websocket.close`` messages; ``receive`` returns
    ``websocket.receive`` messages and finally ``websocket.disconnect``.
    """

    application_state: WebSocketState

    async def accept(
        self, subprotocol: str | None = None, headers: Iterable[tuple[bytes, bytes]] | None = None
    ) -> None: ...

    async def send(self, message: Message) -> None: ...

    async def receive(self) -> Message: ...
