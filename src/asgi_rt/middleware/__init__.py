"""Pure ASGI middleware for WebSocket handshakes and authentication."""

from .auth import Authenticated, AuthInfo, FirstMessageAuthMiddleware
from .handshake import HandshakeMiddleware
from .telemetry import TelemetryMiddleware

__all__ = [
    "AuthInfo",
    "Authenticated",
    "FirstMessageAuthMiddleware",
    "HandshakeMiddleware",
    "TelemetryMiddleware",
]
