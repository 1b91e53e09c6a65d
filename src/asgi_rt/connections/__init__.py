"""Connections with bounded outbound queues, and the managers that fan out over them."""

from ._authorize import Action as AuthorizeAction
from .backpressure import Overflow
from .connection import Connection
from .drain import drain_on_signal
from .heartbeat import Heartbeat
from .manager import ConnectionManager
from .ratelimit import RateLimit
from .rooms import RoomManager
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
