"""asgi_rt: production-grade WebSockets for any Starlette or FastAPI app."""

from .connections import Connection, ConnectionManager, ManagerStats, Overflow, RateLimit
from .exceptions import (
    AsgiRtError,
    ConnectionClosed,
    DuplicateConnectionId,
    InvalidData,
    MessageTooBig,
    ProtocolViolation,
    RateLimitExceeded,
)
from .injection import get_manager, manager_dependency, provide

__all__ = [
    "AsgiRtError",
    "Connection",
    "ConnectionClosed",
    "ConnectionManager",
    "DuplicateConnectionId",
    "InvalidData",
    "ManagerStats",
    "MessageTooBig",
    "Overflow",
    "ProtocolViolation",
    "RateLimit",
    "RateLimitExceeded",
    "get_manager",
    "manager_dependency",
    "provide",
]

__version__ = "0.1.0"
