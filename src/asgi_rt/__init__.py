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
from .middleware import (
    Authenticated,
    AuthInfo,
    FirstMessageAuthMiddleware,
    HandshakeMiddleware,
)

__all__ = [
    "AsgiRtError",
    "AuthInfo",
    "Authenticated",
    "Connection",
    "ConnectionClosed",
    "ConnectionManager",
    "DuplicateConnectionId",
    "FirstMessageAuthMiddleware",
    "HandshakeMiddleware",
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
