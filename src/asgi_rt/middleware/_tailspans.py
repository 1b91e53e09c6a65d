"""Tail-sampled frame spans: a span for an unsampled frame only when it turned out slow.

Head sampling decides before the frame is processed, so a 1 % ratio misses most slow
frames. With a threshold, a frame head sampling passed over costs a clock read and two
ints; only one whose processing exceeded the threshold gets a span, built after the fact
and backdated to the frame's real start. It carries the sampled frame span's attributes,
the sends it caused on this connection (count and bytes) and ``asgi_rt.sampled="slow"``
so an operator can tell it from a head-sampled span.
"""

from __future__ import annotations

import math
import time

from opentelemetry.trace import Link, SpanKind, Tracer

from ._tracing import start_frame_span

__all__ = ["SLOW_SAMPLED", "SlowFrameTracer", "check_slow_frame_seconds"]

SLOW_SAMPLED = {"asgi_rt.sampled": "slow"}


def check_slow_frame_seconds(value: float | None) -> float | None:
    """``None`` (off) or a finite number of seconds > 0.

    Raises:
        TypeError: not a number (a bool is not one here).
        ValueError: not finite, or not above zero.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"slow_frame_seconds must be a number of seconds or None, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"slow_frame_seconds must be a finite number > 0, got {value!r}")
    return float(value)


class SlowFrameTracer:
    """Builds the span of one slow, unsampled frame once its processing has ended."""

    __slots__ = ("threshold", "tracer")

    def __init__(self, tracer: Tracer, threshold: float) -> None:
        self.tracer, self.threshold = tracer, threshold

    def frame_done(
        self, route: str, link: Link | None, size: int, elapsed: float, sends: int, sent: int
    ) -> None:
        """Record the frame if ``elapsed`` (seconds of processing) passed the threshold."""
        if elapsed <= self.threshold:
            return
        end = time.time_ns()
        extra: dict[str, str | int] = {
            "asgi_rt.frame.sends": sends, "asgi_rt.frame.sent_bytes": sent, **SLOW_SAMPLED,
        }  # fmt: skip
        span = start_frame_span(self.tracer, f"WS {route} receive", SpanKind.CONSUMER, route,
                                size, link, start_time=end - int(elapsed * 1e9),
                                extra=extra)  # fmt: skip
        span.end(end_time=end)
