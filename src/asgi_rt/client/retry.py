"""When to reconnect: capped exponential backoff with full jitter, and when to stop.

Full jitter (a uniform draw between 0 and the capped exponential) is what spreads
thousands of clients that lost their server in the same second; see AWS' "Exponential
Backoff And Jitter". Backoff is reset only by a connection that *stayed up*: a server
that accepts and drops at once keeps the client backing off instead of in a tight loop.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Backoff", "Disconnect", "RetryPolicy"]


@dataclass(frozen=True, slots=True)
class Disconnect:
    """What ended the last attempt.

    Attributes:
        code: the close code the server sent, or ``None`` when there was no close frame
            (connection refused, reset, handshake rejected, auth timed out).
        reason: its close reason, or the error's text.
        status: the HTTP status when the handshake was refused (429, 503, 401, ...).
        failures: consecutive attempts that failed or did not stay up, this one included.
        uptime: seconds the connection was up after ``auth_ok`` (after the handshake when
            the client sends no token); 0 when it never got that far.
        phase: where it ended: ``"connect"`` (no TCP connection), ``"handshake"`` (an HTTP
            refusal or a bad handshake), ``"auth"`` (no or a refused ``auth_ok``),
            ``"open"`` (closed or lost after it was up), ``""`` when unknown.
        retry_after: seconds the server asked to wait: its ``Retry-After`` header on a
            refused handshake, or the ``"; retry in 1.3s"`` end of a close reason.
    """

    code: int | None
    reason: str
    failures: int
    uptime: float
    status: int | None = None
    phase: str = ""
    retry_after: float | None = None

    def describe(self) -> str:
        """What happened, in words naming the phase (used in ``ClientGaveUp``'s message)."""
        if self.phase == "handshake" and self.status is not None:
            wait = "" if self.retry_after is None else f" (Retry-After {self.retry_after:g} s)"
            return f"handshake refused with HTTP {self.status}{wait}"
        closed = None if self.code is None else f"close {self.code} {self.reason!r}"
        if self.phase == "auth":
            return f"auth refused: {closed}" if closed else f"auth failed: {self.reason}"
        if self.phase == "open":
            return f"closed by the server: {closed}" if closed else f"lost: {self.reason}"
        return f"{self.phase or 'attempt'} failed: {closed or self.reason}"


class RetryPolicy(Protocol):
    """Decides, after each disconnect, how long to wait before the next attempt."""

    def next_delay(self, disconnect: Disconnect) -> float | None:
        """Seconds to wait before reconnecting, or ``None`` to give up."""
        ...

    def is_stable(self, uptime: float) -> bool:
        """Whether a connection up for ``uptime`` seconds resets the failure count."""
        ...


@dataclass(frozen=True)
class Backoff:
    """The default policy.

    Args:
        initial: the first delay's cap, in seconds.
        maximum: the largest delay's cap.
        multiplier: how much the cap grows per consecutive failure.
        stable_after: a connection up at least this long resets the backoff.
        max_failures: give up after this many consecutive failures (``None``: never).
        give_up_codes: close codes after which the client never reconnects (1008: policy or
            authentication; retrying would only be refused again).
        give_up_statuses: handshake statuses after which it never reconnects (401, 403).
        max_retry_after: the most seconds of a server's ``Retry-After`` (or close-reason
            hint) the policy obeys; the delay is at least ``min(retry_after,
            max_retry_after)``, so a server can slow clients down but not park them.
        rng: the random source (inject a seeded one in tests).

    Raises:
        ValueError: a bound is out of range.
    """

    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0
    stable_after: float = 10.0
    max_failures: int | None = None
    give_up_codes: frozenset[int] = frozenset({1008})
    give_up_statuses: frozenset[int] = frozenset({401, 403})
    max_retry_after: float = 60.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {self.initial}, {self.maximum}")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")
        if self.stable_after < 0:
            raise ValueError(f"stable_after must be >= 0, got {self.stable_after}")
        if self.max_failures is not None and self.max_failures < 1:
            raise ValueError(f"max_failures must be >= 1 or None, got {self.max_failures}")
        if not self.max_retry_after >= 0:
            raise ValueError(f"max_retry_after must be >= 0, got {self.max_retry_after}")

    def cap(self, failures: int) -> float:
        """The upper bound of the delay after ``failures`` consecutive failures."""
        exponent = min(max(failures - 1, 0), 64)  # beyond 2**64 the cap is long reached
        return float(min(self.maximum, self.initial * self.multiplier**exponent))

    def next_delay(self, disconnect: Disconnect) -> float | None:
        if disconnect.code in self.give_up_codes or disconnect.status in self.give_up_statuses:
            return None
        if self.max_failures is not None and disconnect.failures >= self.max_failures:
            return None
        delay = self.rng.uniform(0, self.cap(disconnect.failures))
        if disconnect.retry_after is None:
            return delay
        return max(delay, min(disconnect.retry_after, self.max_retry_after))

    def is_stable(self, uptime: float) -> bool:
        return uptime >= self.stable_after
