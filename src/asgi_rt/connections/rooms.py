"""Where ``RoomManager`` lived before :mod:`asgi_rt.rooms`; kept so that imports work."""

from ..rooms.manager import RoomManager

__all__ = ["RoomManager"]
