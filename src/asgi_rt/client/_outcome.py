"""What ended one connection attempt, read from the error that ended it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .._retry_hint import parse_retry_after, retry_hint

__all__ = ["AuthFailed", "Outcome", "outcome_of"]

logger = logging.getLogger("asgi_rt.client")


class AuthFailed(Exception):
    """The server answered the auth frame with something other than ``auth_ok``."""


@dataclass(frozen=True, slots=True)
class Outcome:
    phase: str
    code: int | None = None
    reason: str = ""
    status: int | None = None
    retry_after: float | None = None


def outcome_of(exc: Exception, phase: str, url: str) -> Outcome:
    """``exc`` ended the attempt while in ``phase`` (connect, auth or open)."""
    if isinstance(exc, ConnectionClosed):
        if exc.rcvd is None:
            return Outcome(phase, None, str(exc))
        reason = exc.rcvd.reason
        return Outcome(phase, exc.rcvd.code, reason, retry_after=retry_hint(reason))
    if isinstance(exc, InvalidStatus):
        response = exc.response
        wait = parse_retry_after(response.headers.get("Retry-After"))
        return Outcome("handshake", None, str(exc), response.status_code, wait)
    if isinstance(exc, InvalidHandshake):
        return Outcome("handshake", None, str(exc) or type(exc).__name__)
    if isinstance(exc, TimeoutError) and phase == "auth":
        return Outcome(phase, None, "timed out waiting for auth_ok")
    if isinstance(exc, OSError | TimeoutError | AuthFailed):
        return Outcome(phase, None, str(exc) or type(exc).__name__)
    # a hook of the user's (token, resume_url, on_connect) raised
    logger.warning("connection attempt to %s failed in a hook", url, exc_info=True)
    return Outcome(phase, None, repr(exc))
