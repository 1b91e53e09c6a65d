"""TelemetryMiddleware: Prometheus metrics and OpenTelemetry spans for every frame.

The peer our users try first, the OpenTelemetry ASGI middleware, names WebSocket spans
by raw path, nests two spans per frame under one endless connection span, records no
close codes and costs about two thirds of echo throughput. This one names spans and
labels metrics by route template, links frame spans to a short handshake span, records
how connections end, and decides frame sampling before touching the tracer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, TracerProvider
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import mark_process_dead
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._version import __version__
from ..looplag import LoopLagMonitor
from ..metrics import Metrics
from ._sserecorder import EventStreamRecorder, wants_event_stream
from ._stackcheck import reports_config_errors
from ._tailspans import SlowFrameTracer, check_slow_frame_seconds
from ._tracing import AttributesHook, frame_sampler
from ._wsrecorder import WebSocketRecorder

__all__ = ["TelemetryMiddleware"]

logger = logging.getLogger("asgi_rt.telemetry")


class TelemetryMiddleware:
    """Observe WebSocket (and SSE) traffic; plain HTTP passes through after a type check.

    Args:
        app: the ASGI app.
        metrics: the :class:`~asgi_rt.metrics.Metrics` to record into; made on
            ``registry`` if omitted. Share one per registry.
        registry: where a new ``Metrics`` registers (default: the global registry).
        tracer_provider: OpenTelemetry provider (default: the global API one, a no-op
            unless an SDK is configured).
        frame_sample_ratio: share of frames that get a span, decided before the tracer
            is called (handshake and close records are always offered to the tracer).
        send_spans: ``True`` (default): each sampled send is a PRODUCER span, the child of
            the frame being processed when there is one. ``False``: a send made while
            processing a traced inbound frame is a ``send`` event (with its size) on that
            frame's span, and other sends (broadcasts outside any traced frame) are not
            traced; one span per traced round trip instead of two, about half the tracing
            cost (figures in ``bench/RESULTS.md``). Metrics are the same either way.
        slow_frame_seconds: ``None`` (default): only head sampling. A number: a frame that
            head sampling passed over still gets a CONSUMER span when its processing took
            longer than this many seconds, built after the fact with the frame's real start
            time, the sends it caused on this connection (``asgi_rt.frame.sends``,
            ``asgi_rt.frame.sent_bytes``) and ``asgi_rt.sampled="slow"``. Pair it with a low
            ``frame_sample_ratio`` to see every slow frame at about the 1 % cost.
        span_attributes: ``hook(scope) -> {name: value}`` added to the handshake span;
            a raising hook is logged and ignored.
        loop_lag: run a :class:`~asgi_rt.looplag.LoopLagMonitor` for the app's lifespan
            (``asgi_rt_event_loop_lag_seconds``, and a WARNING with the blocking stack).
        loop_lag_threshold: seconds the loop may be held before that WARNING.

    Raises:
        ValueError: ``frame_sample_ratio`` outside [0, 1].
        ValueError: ``slow_frame_seconds`` not finite or not above zero.
        TypeError: ``send_spans`` not a bool; ``slow_frame_seconds`` not a number.
    """

    @reports_config_errors
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics | None = None,
        registry: CollectorRegistry | None = None,
        tracer_provider: TracerProvider | None = None,
        frame_sample_ratio: float = 1.0,
        send_spans: bool = True,
        slow_frame_seconds: float | None = None,
        span_attributes: AttributesHook | None = None,
        loop_lag: bool = True,
        loop_lag_threshold: float = 0.1,
    ) -> None:
        if not isinstance(send_spans, bool):
            raise TypeError(f"send_spans must be a bool, got {send_spans!r}")
        self.app = app
        self.sampler = frame_sampler(frame_sample_ratio)
        self.send_spans = send_spans
        self.metrics = Metrics(registry) if metrics is None else metrics
        self.tracer = trace.get_tracer("asgi_rt", __version__, tracer_provider=tracer_provider)
        self.span_attributes = span_attributes
        threshold = check_slow_frame_seconds(slow_frame_seconds)
        self.slow_frames = None if threshold is None else SlowFrameTracer(self.tracer, threshold)
        self.loop_lag, self.loop_lag_threshold = loop_lag, loop_lag_threshold

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await WebSocketRecorder(self, scope).run(self.app, receive, send)
        elif kind == "http" and wants_event_stream(scope):
            await EventStreamRecorder(self, scope).run(self.app, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """For the app's lifetime: the loop-lag monitor, and (multiprocess) the dead mark."""
        if self.metrics.multiprocess:
            send = _mark_dead_on_shutdown(send)
        if not self.loop_lag:
            await self.app(scope, receive, send)
            return
        monitor = LoopLagMonitor(metrics=self.metrics, threshold=self.loop_lag_threshold)
        async with monitor:
            await self.app(scope, receive, send)

    def user_attributes(self, span: Span, scope: Scope) -> None:
        if self.span_attributes is None or not span.is_recording():
            return
        try:
            attributes: Mapping[str, Any] = self.span_attributes(scope)
            span.set_attributes(dict(attributes))
        except Exception:
            logger.exception("span_attributes hook raised; the span goes on without them")


def _mark_dead_on_shutdown(send: Send) -> Send:
    """In multiprocess mode, mark this worker's live gauges dead once it shuts down."""

    async def send_and_mark(message: Message) -> None:
        await send(message)
        if message["type"] == "lifespan.shutdown.complete":
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    return send_and_mark
