"""Apps with a mistake in their middleware, served by a real uvicorn in tests/test_mistakes.py.

``bad_origins``: a malformed allowlist entry (no scheme). ``wrong_order``: the handshake
checks added inside first-message auth, so a foreign Origin is seen only after accept.
"""

from __future__ import annotations

from fastapi import FastAPI, WebSocket

from asgi_rt import FirstMessageAuthMiddleware, HandshakeMiddleware


async def verify(token: str) -> str | None:
    return "alice" if token == "alice-token" else None


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.close()


bad_origins = FastAPI()
bad_origins.add_middleware(HandshakeMiddleware, allowed_origins=["app.example.com"])
bad_origins.add_api_websocket_route("/ws", ws)

wrong_order = FastAPI()
wrong_order.add_middleware(HandshakeMiddleware, allowed_origins=["https://app.example.com"])
wrong_order.add_middleware(FirstMessageAuthMiddleware, authenticate=verify)  # now outermost
wrong_order.add_api_websocket_route("/ws", ws)
