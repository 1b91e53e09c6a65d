"""A circuit breaker for ClientPool's connects: after a failure, fail fast for a while."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from websockets.exceptions import InvalidHandshake

from ..exceptions import UpstreamUnavailable
from .retry import Backoff

__all__ = ["Breaker"]


class Breaker:
    """Closed (connect freely), open until a deadline (fail fast), then half-open (one
    trial connect; the others still fail fast until it ends)."""

    def __init__(self, backoff: Backoff) -> None:
        self._backoff = backoff
        self.failures = 0
        self._open_until = 0.0
        self._trial = False

    @contextmanager
    def attempt(self, uri: str) -> Iterator[None]:
        """Around one connect to ``uri``; raises ``UpstreamUnavailable`` instead of trying
        while open, and in place of a connect error."""
        left = self._open_until - time.monotonic()
        if self.failures and (left > 0 or self._trial):
            raise UpstreamUnavailable(
                f"{uri} is unavailable after {self.failures} failed connect(s); "
                + (f"next try in {left:.1f} s" if left > 0 else "a trial connect is under way"),
                retry_after=max(0.0, left),
            )  # fmt: skip
        self._trial = self.failures > 0
        try:
            yield
        except (OSError, InvalidHandshake) as exc:
            delay = self._open()
            raise UpstreamUnavailable(
                f"cannot connect to {uri}: {exc or type(exc).__name__}; next try in {delay:.1f} s",
                retry_after=delay,
            ) from exc
        else:
            self.failures = 0
        finally:
            self._trial = False

    def _open(self) -> float:
        """Count a failure; open for between half and all of the backoff's cap."""
        self.failures += 1
        cap = self._backoff.cap(self.failures)
        delay = self._backoff.rng.uniform(cap / 2, cap)
        self._open_until = time.monotonic() + delay
        return delay
