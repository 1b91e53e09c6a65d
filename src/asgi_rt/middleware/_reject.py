"""Refusing a WebSocket handshake with a real HTTP status, or the closest thing to it."""

from __future__ import annotations

from starlette.types import Scope, Send

__all__ = ["reject"]


async def reject(
    scope: Scope,
    send: Send,
    status: int,
    body: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Deny the handshake with ``status`` and a short text body.

    Uses the ``websocket.http.response`` extension when the server offers it (uvicorn
    does); otherwise sends ``websocket.close``, which servers turn into a 403.
    """
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008, "reason": body[:120]})
        return
    payload = body.encode()
    await send({
        "type": "websocket.http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(payload)).encode()),
            *(headers or []),
        ],
    })  # fmt: skip
    await send({"type": "websocket.http.response.body", "body": payload})
