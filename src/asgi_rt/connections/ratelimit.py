"""A token bucket for inbound frames."""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["RateLimit", "TokenBucket"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Inbound rate limit for one connection.

    Args:
        per_second: sustained frames per second refilled into the bucket (> 0).
        burst: bucket capacity, the most frames accepted back to back (>= 1).
    """

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not self.per_second > 0:
            raise ValueError(f"per_second must be > 0, got {self.per_second!r}")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst!r}")


class TokenBucket:
    """One connection's bucket; :meth:`take` spends a token or says it cannot."""

    __slots__ = ("_limit", "_stamp", "_tokens")

    def __init__(self, limit: RateLimit) -> None:
        self._limit = limit
        self._tokens = float(limit.burst)
        self._stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        limit = self._limit
        self._tokens = min(limit.burst, self._tokens + (now - self._stamp) * limit.per_second)
        self._stamp = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
