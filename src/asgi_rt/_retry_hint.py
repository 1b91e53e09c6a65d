"""How a server tells a client when to come back, and how the client reads it.

Two carriers, both readable by a browser too:

- a refused handshake (503, 429) carries an HTTP ``Retry-After`` header, in whole
  seconds (RFC 9110 section 10.2.3);
- a close during a drain carries the delay at the end of its reason:
  ``"service restart; retry in 1.3s"`` (regex ``; retry in (\\d+(\\.\\d+)?)s$``).

This module is the one place that writes and parses both.
"""

from __future__ import annotations

import math
import random
import re
from email.utils import parsedate_to_datetime
from time import time

__all__ = [
    "RetryAfter",
    "check_retry_after",
    "drain_reason",
    "header_value",
    "parse_retry_after",
    "retry_hint",
    "with_retry_hint",
]

RetryAfter = float | tuple[float, float]

_HINT = re.compile(r"; retry in (\d+(?:\.\d+)?)s$")
_MAX_REASON = 123  # bytes of UTF-8 a close reason may hold


def with_retry_hint(reason: str, delay: float) -> str:
    """``reason`` with ``"; retry in <delay>s"`` appended, within a close reason's 123 bytes."""
    suffix = f"; retry in {delay:.1f}s"
    room = _MAX_REASON - len(suffix)
    base = reason.encode()[:room].decode(errors="ignore")
    return base + suffix


def drain_reason(reason: str, window: float, offset: float) -> str:
    """The close reason for a connection closed ``offset`` seconds into a drain spread over
    ``window`` seconds: it waits out the rest of the drain, then a uniform share of one
    more window, so that the clients of a restarted server come back spread over the
    window after it, not all at once when the new one listens."""
    delay = max(0.0, window - offset) + random.uniform(0, window)
    return with_retry_hint(reason, delay)


def retry_hint(reason: str) -> float | None:
    """The delay a close reason suggests (``"...; retry in 1.3s"``), else ``None``."""
    match = _HINT.search(reason)
    return None if match is None else float(match.group(1))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delay-seconds or an HTTP date), else
    ``None`` when absent or unreadable; never negative."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - time()
        except (TypeError, ValueError, IndexError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def check_retry_after(spec: RetryAfter | None) -> RetryAfter | None:
    """Validate a ``retry_after=`` option: seconds, a ``(low, high)`` range, or ``None``.

    Raises:
        TypeError: not a number, a pair, or ``None``.
        ValueError: negative, or ``low > high``.
    """
    if spec is None:
        return None
    low, high = spec if isinstance(spec, tuple) else (spec, spec)
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in (low, high)):
        raise TypeError(f"retry_after must be seconds or a (low, high) pair, got {spec!r}")
    if not 0 <= low <= high:
        raise ValueError(f"retry_after needs 0 <= low <= high, got {spec!r}")
    return spec


def header_value(spec: RetryAfter, rng: random.Random | None = None) -> bytes:
    """A ``Retry-After`` value: ``spec`` seconds, or a uniform draw in a ``(low, high)``
    range (jitter, so that refused clients do not all come back together), rounded up to
    the whole seconds the header allows."""
    seconds = (rng or random).uniform(*spec) if isinstance(spec, tuple) else spec
    return str(math.ceil(seconds)).encode()
