"""Small Starlette apps over a ConnectionManager, shared by the tests."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import ConnectionManager, provide
from asgi_rt.injection import get_manager


def echo_app(manager: ConnectionManager, *, kind: str = "raw") -> Starlette:
    """``/ws`` echoes every frame back through the manager (``kind``: raw, text, json)."""

    async def endpoint(websocket: WebSocket) -> None:
        mgr = get_manager(websocket)
        conn_id = websocket.query_params.get("id")
        async with mgr.connect(websocket, id=conn_id) as conn:
            if kind == "json":
                async for value in conn.iter_json():
                    await conn.send(value)
            elif kind == "text":
                async for text in conn.iter_text():
                    await conn.send(text)
            else:
                async for data in conn:
                    await conn.send(data)

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    provide(app, manager)
    return app


def listen_app(manager: ConnectionManager) -> Starlette:
    """``/ws`` registers and then only listens; broadcasts come from the test."""

    async def endpoint(websocket: WebSocket) -> None:
        async with manager.connect(websocket, id=websocket.query_params.get("id")) as conn:
            async for _ in conn:
                pass

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)])
