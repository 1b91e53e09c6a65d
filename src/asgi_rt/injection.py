"""Hand a manager to route handlers without globals: it lives on ``app.state``.

FastAPI::

    provide(app, manager)                       # once, where the app is built
    @app.websocket("/ws")
    async def ws(websocket: WebSocket, manager: ConnectionManager = Depends(get_manager)): ...

Starlette::

    async def ws(websocket: WebSocket) -> None:
        manager = get_manager(websocket)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import HTTPConnection

from .connections.manager import ConnectionManager
from .rooms import RoomManager

__all__ = ["DEFAULT_STATE_NAME", "get_manager", "get_rooms", "manager_dependency", "provide"]

DEFAULT_STATE_NAME = "connections"

M = TypeVar("M", bound=ConnectionManager)


def provide(app: Any, manager: ConnectionManager, *, name: str = DEFAULT_STATE_NAME) -> None:
    """Store ``manager`` on ``app.state.<name>`` for :func:`get_manager` to find.

    ``app`` is a Starlette or FastAPI application (anything with a ``state``).
    """
    if not isinstance(manager, ConnectionManager):
        raise TypeError(f"expected a ConnectionManager, got {type(manager).__name__}")
    setattr(app.state, name, manager)


def manager_dependency(
    kind: type[M], name: str = DEFAULT_STATE_NAME
) -> Callable[[HTTPConnection], M]:
    """Build a dependency returning the ``kind`` of manager stored on ``app.state.<name>``.

    The result works as ``Depends(...)`` in FastAPI and as a plain call in Starlette.
    """

    def dependency(conn: HTTPConnection) -> M:
        manager = getattr(conn.app.state, name, None)
        if manager is None:
            raise LookupError(
                f"no manager on app.state.{name}; call asgi_rt.provide(app, manager, name={name!r})"
            )
        if not isinstance(manager, kind):
            raise TypeError(
                f"app.state.{name} is a {type(manager).__name__}, expected {kind.__name__}"
            )
        return manager

    dependency.__name__ = f"get_{name}"
    return dependency


get_manager: Callable[[HTTPConnection], ConnectionManager] = manager_dependency(ConnectionManager)
get_rooms: Callable[[HTTPConnection], RoomManager] = manager_dependency(RoomManager, "rooms")
