"""Managers reach route handlers through app.state: FastAPI Depends and plain Starlette."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI, WebSocket
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from asgi_rt import ConnectionManager, get_manager, manager_dependency, provide
from asgi_rt.testing import websocket_session


@pytest.mark.anyio
async def test_fastapi_dependency_injects_the_provided_manager() -> None:
    app = FastAPI()
    manager = ConnectionManager()
    provide(app, manager)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, mgr: ConnectionManager = Depends(get_manager)) -> None:
        async with mgr.connect(websocket) as conn:
            await conn.send(f"registered={len(mgr)} same={mgr is manager}")

    async with websocket_session(app, "/ws") as client:
        assert await client.receive_text() == "registered=1 same=True"


def test_missing_manager_is_a_clear_lookup_error() -> None:
    app = Starlette()
    conn = HTTPConnection({"type": "http", "app": app, "headers": []})
    with pytest.raises(LookupError, match=r"no manager on app.state.rooms; call asgi_rt.provide"):
        manager_dependency(ConnectionManager, "rooms")(conn)


def test_wrong_kind_on_state_is_a_type_error() -> None:
    app = Starlette()
    app.state.connections = object()
    conn = HTTPConnection({"type": "http", "app": app, "headers": []})
    with pytest.raises(TypeError, match="expected ConnectionManager"):
        get_manager(conn)


def test_provide_refuses_non_managers() -> None:
    with pytest.raises(TypeError, match="expected a ConnectionManager"):
        provide(Starlette(), object())  # type: ignore[arg-type]
