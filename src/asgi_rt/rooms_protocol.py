"""Many rooms over one socket: ``join``/``leave`` envelopes handled by a :class:`Router`.

Register the handlers once and serve each connection with the router::

    router = Router()
    room_handlers(router, rooms, allow=lambda conn, room: room.startswith("public-"))

    async with rooms.connect(websocket) as conn:
        await router.serve(conn)

A client then sends ``{"type": "join", "data": {"room": ..., "since": ..., "epoch": ...},
"id": ...}`` (``since``/``epoch`` optional: a resume) and gets the room's ``joined``
announcement and frames as with a ``/ws/{room}`` route, then the ack ``{"room": ...,
"joined": true}``, or ``{"room": ..., "joined": false, "reason": ...}`` when ``allow`` or
``max_rooms`` refuses; ``{"type": "leave", "data": {"room": ...}}`` leaves (ack ``{"room":
..., "joined": false}``). Malformed data is answered with an ``error`` frame
(``invalid_data``; ``handler_error`` when the backplane is unreachable) and the connection
goes on. The browser client does this with ``new RtClient({multiplex: true})``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from .connections.connection import Connection
from .exceptions import Forbidden
from .messages import Router
from .rooms import RoomManager

__all__ = ["RoomRequest", "room_handlers"]

ROOM = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
Allow = Callable[[Connection, str], bool]


@dataclass(frozen=True, slots=True)
class RoomRequest:
    """The data of a ``join`` or ``leave`` frame, validated."""

    room: str
    since: int | None = None
    epoch: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.room, str) or not ROOM.fullmatch(self.room):
            raise ValueError("room must be 1-64 of A-Z a-z 0-9 _ . : -")
        since = self.since
        if since is not None and (isinstance(since, bool) or not isinstance(since, int)
                                  or since < 0):  # fmt: skip
            raise ValueError("since must be a non-negative integer")
        if self.epoch is not None and not isinstance(self.epoch, str):
            raise ValueError("epoch must be a string")


def room_handlers(router: Router, rooms: RoomManager, *, allow: Allow | None = None,
                  max_rooms: int = 100) -> None:  # fmt: skip
    """Register ``join`` and ``leave`` on ``router``.

    Args:
        router: the router the connection is served with.
        rooms: the room manager the connection belongs to.
        allow: ``(conn, room) -> bool``; a refused join is acked ``"joined": false``.
        max_rooms: rooms one connection may be in at once.

    Raises:
        ValueError: ``max_rooms`` < 1, or ``join``/``leave`` are registered already.
    """
    if max_rooms < 1:
        raise ValueError(f"max_rooms must be >= 1, got {max_rooms}")
    # the rooms each connection joined through these handlers; gone with the connection
    joined: WeakKeyDictionary[Connection, set[str]] = WeakKeyDictionary()

    @router.on("join", model=_request)
    async def join(conn: Connection, data: RoomRequest) -> dict[str, Any]:
        if allow is not None and not allow(conn, data.room):
            return {"room": data.room, "joined": False, "reason": "not allowed"}
        mine = joined.setdefault(conn, set())
        if len(mine) >= max_rooms and data.room not in mine:
            return {"room": data.room, "joined": False, "reason": f"in {max_rooms} rooms already"}
        try:
            await rooms.join(conn, data.room, since=data.since, epoch=data.epoch, announce=True)
        except Forbidden:  # the manager's authorize said no: an answer, not a handler error
            return {"room": data.room, "joined": False, "reason": "not allowed"}
        mine.add(data.room)
        return {"room": data.room, "joined": True}

    @router.on("leave", model=_request)
    async def leave(conn: Connection, data: RoomRequest) -> dict[str, Any]:
        await rooms.leave(conn, data.room)
        joined.get(conn, set()).discard(data.room)
        return {"room": data.room, "joined": False}


def _request(data: Any) -> RoomRequest:
    if not isinstance(data, dict):
        raise ValueError("expected an object with 'room' (and optional 'since', 'epoch')")
    unknown = set(data) - {"room", "since", "epoch"}
    if unknown:
        raise ValueError(f"unexpected field(s): {', '.join(sorted(unknown))}")
    return RoomRequest(**data)
