"""Connections with bounded outbound queues, and the managers that fan out over them."""

from ..rooms import AuthorizeAction, RoomManager
from .backpressure import Overflow
from .connection import Connection
from .drain import drain_on_signal
from .heartbeat import Heartbeat
from .manager import ConnectionManager
from .ratelimit import RateLimit
from .state import ConnectionState
from .stats import ManagerStats

__all__ = [
    "AuthorizeAction",
    "Connection",
    "ConnectionManager",
    "ConnectionState",
    "Heartbeat",
    "ManagerStats",
    "Overflow",
    "RateLimit",
    "RoomManager",
    "drain_on_signal",
]
