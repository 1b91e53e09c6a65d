"""asgi_rt: production-grade WebSockets for any Starlette or FastAPI app."""

from ._version import __version__ as __version__
from .connections import (
    Connection,
    ConnectionManager,
    Heartbeat,
    ManagerStats,
    Overflow,
    RateLimit,
    RoomManager,
    drain_on_signal,
)
from .exceptions import (
    AsgiRtError,
    BackendUnavailable,
    ClientGaveUp,
    ConnectionClosed,
    DuplicateConnectionId,
    HistoryGap,
    InvalidData,
    MessageTooBig,
    OutboxFull,
    PoolExhausted,
    ProtocolViolation,
    PublishNotApplied,
    PublishOutcomeUnknown,
    RateLimitExceeded,
    RequestFailed,
    UpstreamUnavailable,
)
from .injection import get_manager, get_rooms, manager_dependency, provide
from .messages import Router
from .metrics import Metrics, metrics_app
from .middleware import (
    Authenticated,
    AuthInfo,
    FirstMessageAuthMiddleware,
    HandshakeMiddleware,
    TelemetryMiddleware,
)
from .sse import EventStreamResponse

__all__ = [
    "AsgiRtError",
    "AuthInfo",
    "Authenticated",
    "BackendUnavailable",
    "ClientGaveUp",
    "Connection",
    "ConnectionClosed",
    "ConnectionManager",
    "DuplicateConnectionId",
    "EventStreamResponse",
    "FirstMessageAuthMiddleware",
    "HandshakeMiddleware",
    "Heartbeat",
    "HistoryGap",
    "InvalidData",
    "ManagerStats",
    "MessageTooBig",
    "Metrics",
    "OutboxFull",
    "Overflow",
    "PoolExhausted",
    "ProtocolViolation",
    "PublishNotApplied",
    "PublishOutcomeUnknown",
    "RateLimit",
    "RateLimitExceeded",
    "RequestFailed",
    "RoomManager",
    "Router",
    "TelemetryMiddleware",
    "UpstreamUnavailable",
    "drain_on_signal",
    "get_manager",
    "get_rooms",
    "manager_dependency",
    "metrics_app",
    "provide",
]
