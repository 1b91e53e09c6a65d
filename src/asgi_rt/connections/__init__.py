"""Connections with bounded outbound queues, and the managers that fan out over them."""

from .backpressure import Overflow
from .connection import Connection
from .heartbeat import Heartbeat
from .manager import ConnectionManager
from .ratelimit import RateLimit
from .rooms import RoomManager
from .stats import ManagerStats

__all__ = [
    "Connection",
    "ConnectionManager",
    "Heartbeat",
    "ManagerStats",
    "Overflow",
    "RateLimit",
    "RoomManager",
]
