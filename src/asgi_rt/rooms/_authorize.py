"""Who may join, publish to or stream which room: RoomManager's one ``authorize`` hook."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

from ..connections.connection import Connection
from ..exceptions import Forbidden

__all__ = ["Action", "Authorize", "Authorizer", "principal_of"]

logger = logging.getLogger("asgi_rt.rooms")


class Action(StrEnum):
    """What ``authorize`` is asked about (it compares equal to the plain string)."""

    JOIN = "join"  # a WebSocket joins a room
    PUBLISH = "publish"  # the app publishes on behalf of a connection (publish_as)
    SUBSCRIBE = "subscribe"  # an SSE stream of a room opens or resumes


# authorize(principal, action, room) -> bool; principal is scope["user"] (None: anonymous)
Authorize = Callable[[Any, Action, str], Awaitable[bool]]


def principal_of(conn: Connection) -> Any:
    """The connection's ``scope["user"]`` (set by FirstMessageAuthMiddleware), or ``None``."""
    scope = getattr(conn.websocket, "scope", None)
    return scope.get("user") if isinstance(scope, dict) else None


class Authorizer:
    """Runs the hook failsafe (a raising hook is logged and denies) and counts denials."""

    __slots__ = ("_denials", "_hook")

    def __init__(self, hook: Authorize | None, metrics: Any) -> None:
        if hook is not None and not callable(hook):
            raise TypeError("authorize must be an async callable (principal, action, room)")
        self._hook = hook
        self._denials = None if metrics is None else metrics.authorization_denials

    async def allowed(self, principal: Any, action: Action, room: str) -> bool:
        """Whether ``principal`` may ``action`` ``room``; always ``True`` without a hook."""
        if self._hook is None:
            return True
        try:
            allowed = await self._hook(principal, action, room) is True
        except Exception:
            logger.exception("authorize raised for %s on room %r; denying", action.value, room)
            allowed = False
        if not allowed and self._denials is not None:
            self._denials.labels(action.value).inc()
        return allowed

    async def check(self, conn: Connection, action: Action, room: str) -> None:
        """Raise :class:`Forbidden` unless ``conn``'s principal may ``action`` ``room``."""
        if not await self.allowed(principal_of(conn), action, room):
            raise Forbidden(action.value, room)

    async def check_join(self, conn: Connection, room: str) -> None:
        """:meth:`check` for a join: ``subscribe`` for an SSE stream, else ``join``."""
        await self.check(conn, Action.SUBSCRIBE if conn.kind == "sse" else Action.JOIN, room)
