"""Errors raised by asgi_rt.

Every error derives from :class:`AsgiRtError` and carries a short ``reason``. Errors
about closing (or refusing) a connection also carry the WebSocket close ``code``
(RFC 6455 section 7.4) it was or should be closed with; the others (a request without
an ack, a pool or outbox without room, a history gap) have ``code`` ``None``, as in
``websockets.exceptions`` only ``ConnectionClosed`` has one::

    AsgiRtError
    ├── ConnectionClosed        the connection is closed; sending to it is pointless (code, reason)
    ├── DuplicateConnectionId   connect() was given an id that is already registered (1008)
    ├── RequestFailed           conn.request() got no ack in time, or too many were pending
    ├── PoolExhausted           ClientPool had no connection to lend in time (or was closed)
    │   └── UpstreamUnavailable     ClientPool could not connect, or its breaker is open
    ├── ClientGaveUp            ResilientClient stopped reconnecting (1008, or too many failures)
    ├── OutboxFull              ResilientClient's bounded outbox had no room while disconnected
    ├── HistoryGap              a room's history cannot fill a gap (trimmed, or the epoch changed)
    ├── Forbidden               RoomManager's ``authorize`` refused a join, publish or stream (1008)
    ├── BackendUnavailable      the backplane cannot be reached now
    │   ├── PublishNotApplied       a publish that certainly did not happen: safe to retry
    │   └── PublishOutcomeUnknown   a publish that may or may not have happened: retry only
    │                               with the same ``idempotency_key``
    └── ProtocolViolation       the peer broke a limit; the connection was closed with `code`
        ├── MessageTooBig       a frame over max_message_size (1009)
        ├── RateLimitExceeded   the per-connection token bucket ran dry (1008)
        └── InvalidData         a frame of the wrong kind or undecodable payload (1003 / 1007)

Configuration errors are not part of the tree: constructors raise ``ValueError`` or
``TypeError`` at construction, as the standard library does.
"""

from __future__ import annotations

__all__ = [
    "AsgiRtError",
    "BackendUnavailable",
    "ClientGaveUp",
    "ConnectionClosed",
    "DuplicateConnectionId",
    "Forbidden",
    "HistoryGap",
    "InvalidData",
    "MessageTooBig",
    "OutboxFull",
    "PoolExhausted",
    "ProtocolViolation",
    "PublishNotApplied",
    "PublishOutcomeUnknown",
    "RateLimitExceeded",
    "RequestFailed",
    "UpstreamUnavailable",
]


class AsgiRtError(Exception):
    """Root of every error asgi_rt raises on purpose.

    Attributes:
        code: the WebSocket close code the condition maps to, or ``None`` for an error
            that is not about closing a connection.
        reason: a short, client-safe reason (at most 123 bytes of UTF-8).
    """

    default_code: int | None = 1011
    default_reason = "internal error"
    code: int | None

    def __init__(self, message: str = "", *, code: int | None = None, reason: str | None = None):
        self.code = self.default_code if code is None else code
        self.reason = self.default_reason if reason is None else reason
        super().__init__(message or self.reason)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, code={self.code}, reason={self.reason!r})"


class ConnectionClosed(AsgiRtError):
    """The connection is closed (or closing); nothing more can be sent on it."""

    default_code = 1006
    default_reason = "connection closed"


class DuplicateConnectionId(AsgiRtError):
    """``connect(id=...)`` named an id that a live connection already holds."""

    default_code = 1008
    default_reason = "duplicate connection id"


class RequestFailed(AsgiRtError):
    """A ``conn.request`` got no ack in time, or too many were already pending."""

    default_code = None
    default_reason = "request failed"


class PoolExhausted(AsgiRtError):
    """A ``ClientPool`` could not lend a connection: timeout, too many waiters, or closed."""

    default_code = None
    default_reason = "no connection available"


class UpstreamUnavailable(PoolExhausted):
    """A ``ClientPool`` could not connect to its upstream, or its circuit breaker is open
    after failed connects: fails at once instead of every borrower trying.

    Attributes:
        retry_after: seconds until the breaker lets one borrower try again (0: a trial is
            under way). The connect error, when there was one, is the ``__cause__``.
    """

    default_reason = "upstream unavailable"

    def __init__(self, message: str = "", *, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ClientGaveUp(AsgiRtError):
    """The resilient client stopped: the server closed with a code that must not be retried
    (1008 by default), or the retry policy gave up after ``attempts`` failures.

    Raised as itself out of ``async with ResilientClient(...)`` (never inside an
    ``ExceptionGroup``). The message names the phase the last attempt ended in.

    Attributes:
        code: the last close frame's code; 1006 when there was none (no connection, an
            HTTP refusal, a lost connection), then see ``status``.
        reason: the close reason, or the error's text.
        status: the HTTP status of a refused handshake (401, 429, 503...), else ``None``.
        phase: ``"connect"``, ``"handshake"``, ``"auth"`` or ``"open"`` (see
            :class:`~asgi_rt.client.retry.Disconnect`).
        attempts: connection attempts made in all.
    """

    default_code = 1006
    default_reason = "gave up reconnecting"

    def __init__(
        self, message: str = "", *, code: int | None = None, reason: str | None = None,
        attempts: int = 0, status: int | None = None, phase: str = "",
    ) -> None:  # fmt: skip
        super().__init__(message, code=code, reason=reason)
        self.attempts, self.status, self.phase = attempts, status, phase

    def __repr__(self) -> str:
        return (
            f"ClientGaveUp({str(self)!r}, code={self.code}, reason={self.reason!r}, "
            f"status={self.status}, phase={self.phase!r}, attempts={self.attempts})"
        )


class OutboxFull(AsgiRtError):
    """``ResilientClient.send`` while disconnected, with ``outbox_size`` messages waiting."""

    default_code = None
    default_reason = "outbox full"


class HistoryGap(AsgiRtError):
    """The history cannot fill the gap since ``since``: trimmed, or the epoch changed.

    ``reason`` says which ("trimmed", "epoch changed", "unknown position")."""

    default_code = None
    default_reason = "history unavailable"


class Forbidden(AsgiRtError):
    """``RoomManager(authorize=...)`` refused ``action`` on ``room`` (or raised).

    ``str(error)`` names the action and the room, never the principal or a token; the
    close ``reason`` is the short ``"forbidden"``.
    """

    default_code = 1008
    default_reason = "forbidden"

    def __init__(self, action: str, room: str) -> None:
        super().__init__(f"not allowed to {action} room {room!r}")
        self.action, self.room = action, room


class BackendUnavailable(AsgiRtError):
    """The backplane cannot be reached (a call during an outage fails fast with this).

    A publish raises one of the two subclasses, which say whether it applied."""

    default_code = 1013
    default_reason = "backplane unavailable"


class PublishNotApplied(BackendUnavailable):
    """The publish certainly did not happen (e.g. no connection could be made, or the
    backplane refused it): no member will receive it, and retrying is safe."""

    default_reason = "publish not applied"


class PublishOutcomeUnknown(BackendUnavailable):
    """The publish was sent but its answer never came (timeout, connection lost mid-call):
    it may have been applied. Retry with the same ``idempotency_key`` to apply it at most
    once."""

    default_reason = "publish outcome unknown"


class ProtocolViolation(AsgiRtError):
    """The peer broke a limit; the connection has been closed with ``code``."""

    default_code: int = 1008
    code: int
    default_reason = "policy violation"


class MessageTooBig(ProtocolViolation):
    """An inbound frame was larger than ``max_message_size``."""

    default_code = 1009
    default_reason = "message too big"


class RateLimitExceeded(ProtocolViolation):
    """The peer sent faster than its token bucket allows."""

    default_code = 1008
    default_reason = "rate limit exceeded"


class InvalidData(ProtocolViolation):
    """A frame of the wrong kind (1003) or with an undecodable payload (1007)."""

    default_code = 1007
    default_reason = "invalid data"
