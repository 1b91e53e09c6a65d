"""Rooms on top of the connection manager: membership, presence, history replay.

``RoomManager`` fans a room's publications out through a backplane
(:mod:`asgi_rt.backends`) to every worker's members; ``connections/`` below it knows
nothing of rooms.
"""

from ._authorize import Action as AuthorizeAction
from .manager import RoomManager

__all__ = ["AuthorizeAction", "RoomManager"]
