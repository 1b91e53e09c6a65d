"""The one state of a connection, owned by its outbound path (``Connection.state``)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ConnectionState"]


class ConnectionState(StrEnum):
    """Where a :class:`~asgi_rt.Connection` is in its life; it only moves forward.

    A ``StrEnum``, so ``conn.state == "open"`` keeps working.

    Attributes:
        OPEN: sends are written or queued.
        CLOSING: a close was decided (by either side); sends are refused, the queue may drain.
        CLOSED: the close frame was sent (or the peer vanished); nothing is held any more.
    """

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"
