"""One WebSocket connection's telemetry: the receive/send wrappers and what they record.

Per-connection state lives here (never on the middleware). Label children are bound
once, when the route is known (at accept or denial); per frame the wrappers do a
clock read, a few list/int updates and, only for sampled frames, touch the tracer.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._directframes import DirectTally
from .._sendseam import install
from ..metrics import close_code_label
from ._tracing import SIZE_ATTRIBUTE, exemplar_of, route_of, start_frame_span

if TYPE_CHECKING:
    from .telemetry import TelemetryMiddleware

__all__ = ["WebSocketRecorder"]

logger = logging.getLogger("asgi_rt.telemetry")

# The sampled receive-frame span being processed in this context, so a send made while
# handling it (on this connection or, through a broadcast, on another) is its child.
# (Holds the OpenTelemetry Context with that span set, built once per frame, not per send.)
current_frame: ContextVar[Context | None] = ContextVar("asgi_rt_current_frame", default=None)

perf_counter = time.perf_counter
_UNBOUND: Any = None


class WebSocketRecorder:
    # Slots: the per-frame wrappers read a dozen attributes, and with a plain instance
    # dict one attribute more (29 -> 30) cost ~450 instructions per sent frame on CPython
    # 3.11 (bench.frame_cost: attribute access stops being specialised); slots keep it
    # independent of how many attributes the recorder has.
    __slots__ = (
        "_receive", "_send", "accepted_at", "close_code", "close_reason", "counts",
        "exemplar_at", "frame_mark", "frame_span", "frame_token", "handshake",
        "handshake_open", "in_binary", "in_text", "initiator", "link", "mw", "out_binary",
        "out_text", "processing", "received_at", "route", "sample", "scope", "seam",
        "send_duration", "size_in", "size_out", "slow", "started", "tally",
    )  # fmt: skip

    def __init__(self, mw: TelemetryMiddleware, scope: Scope) -> None:
        self.mw, self.scope = mw, scope
        self.sample = mw.sampler
        self.started = perf_counter()
        self.accepted_at: float | None = None
        self.route = "unknown"
        self.received_at: float | None = None  # the frame the app is processing, if any
        self.frame_span: Span | None = None
        self.frame_token: Any = None
        self.slow = mw.slow_frames  # tail sampling of unsampled frames, or None
        self.frame_mark = (0, 0, 0)  # size, sends, bytes sent when the frame came in
        self.exemplar_at = [-1.0, -1.0]  # size in, processing
        self.counts = [0, 0, 0, 0]  # frames in, frames out, bytes in, bytes out
        self.close_code: int | None = None
        self.close_reason = ""
        self.initiator = "server"
        self.handshake = mw.tracer.start_span("WS", kind=SpanKind.SERVER, attributes={
            "network.protocol.name": "websocket",
            "url.scheme": scope.get("scheme", "ws"),
        })  # fmt: skip
        self.handshake_open = True
        self.link: Link | None = None
        # bound label children, set by _bind once the route is known (at accept)
        self.in_text = self.in_binary = self.out_text = self.out_binary = _UNBOUND
        self.size_in = self.size_out = self.processing = self.send_duration = _UNBOUND
        self.tally: DirectTally | None = None  # direct_send frames, counted in bulk

    async def run(self, app: ASGIApp, receive: Receive, send: Send) -> None:
        self._receive, self._send = receive, send
        self.seam = install(self.scope, send)
        try:
            await app(self.scope, self.receive, self.send)
        except BaseException:
            if self.accepted_at is not None and self.close_code is None:
                self.close_code, self.close_reason = 1011, "server error"
            raise
        finally:
            self._finish()

    async def receive(self) -> Message:
        if self.received_at is not None:
            self._frame_done(perf_counter())
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.receive":
            self._frame_in(message)
        elif kind == "websocket.disconnect" and self.close_code is None:
            self.close_code, self.initiator = message.get("code", 1005), "client"
            self.close_reason = message.get("reason") or ""
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind != "websocket.send":
            await self._control(message)
            return
        text = message.get("text")
        if text is not None:
            size = len(text) if text.isascii() else len(text.encode())
            counter = self.out_text
        else:
            size = len(message.get("bytes") or b"")
            counter = self.out_binary
        span = self._send_trace(size)
        started = perf_counter()
        try:
            await self._send(message)
        finally:
            self.send_duration.observe(perf_counter() - started)
            counter.inc()
            self.size_out.observe(size)
            self.counts[1] += 1
            self.counts[3] += size
            if span is not None:
                span.end()

    def direct_sent(self, size: int, text: bool, seconds: float) -> None:
        """A data frame the manager wrote below the middleware (``direct_send``): the same
        metrics and totals as :meth:`send`; no send span or event."""
        (self.out_text if text else self.out_binary).inc()
        self.size_out.observe(size)
        self.send_duration.observe(seconds)
        counts = self.counts
        counts[1] += 1
        counts[3] += size

    def _frame_in(self, message: Message) -> None:
        now = perf_counter()
        self.received_at = now
        text = message.get("text")
        if text is not None:
            size = len(text) if text.isascii() else len(text.encode())
            self.in_text.inc()
        else:
            size = len(message.get("bytes") or b"")
            self.in_binary.inc()
        self.counts[0] += 1
        self.counts[2] += size
        if self.sample():
            span = start_frame_span(self.mw.tracer, f"WS {self.route} receive", SpanKind.CONSUMER,
                                    self.route, size, self.link)  # fmt: skip
            self.frame_span = span
            frame_context = trace.set_span_in_context(span)
            self.frame_token = otel_context.attach(frame_context)
            current_frame.set(frame_context)
        elif self.slow is not None:
            self.frame_mark = (size, *self._sent())
        self.size_in.observe(size, self._exemplar(now, 0))

    def _frame_done(self, now: float) -> None:
        assert self.received_at is not None  # callers check; keeps mypy's narrowing
        elapsed = now - self.received_at
        self.processing.observe(elapsed, self._exemplar(now, 1))
        self.received_at = None
        span = self.frame_span
        if span is None and self.slow is not None:
            size, sends, sent = self.frame_mark
            frames_out, bytes_out = self._sent()
            self.slow.frame_done(self.route, self.link, size, elapsed,
                                 frames_out - sends, bytes_out - sent)  # fmt: skip
        elif span is not None:
            self.frame_span = None
            current_frame.set(None)
            otel_context.detach(self.frame_token)
            span.end()

    def _sent(self) -> tuple[int, int]:
        """Frames and bytes sent so far, through this wrapper or directly (``direct_send``)."""
        tally = self.tally
        if tally is None:
            return self.counts[1], self.counts[3]
        return self.counts[1] + tally.frames, self.counts[3] + tally.bytes

    def _exemplar(self, now: float, which: int) -> dict[str, str] | None:
        """The current frame's trace id, at most once a second per histogram and connection:
        an exemplar only needs to be recent, and making one per frame costs more than the
        frame's measurements."""
        if self.frame_span is None or now - self.exemplar_at[which] < 1.0:
            return None
        self.exemplar_at[which] = now
        return exemplar_of(self.frame_span)

    def _send_trace(self, size: int) -> Span | None:
        """A PRODUCER span for a sampled send; or, with ``send_spans=False``, a ``send``
        event on the traced frame this context is processing (no span to end)."""
        if self.mw.send_spans:
            return self._send_span(size) if self.sample() else None
        frame = current_frame.get()
        if frame is not None:
            trace.get_current_span(frame).add_event("send", {SIZE_ATTRIBUTE: size})
        return None

    def _send_span(self, size: int) -> Span:
        return start_frame_span(self.mw.tracer, f"WS {self.route} send", SpanKind.PRODUCER,
                                self.route, size, self.link, current_frame.get())  # fmt: skip

    async def _control(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            self._handshake_done(101)
        elif kind == "websocket.close":
            if self.accepted_at is None:
                self._handshake_done(403)
            elif self.close_code is None:
                self.close_code = message.get("code", 1000)
                self.close_reason = message.get("reason") or ""
        elif kind == "websocket.http.response.start":
            self._handshake_done(int(message["status"]))
        await self._send(message)

    def _handshake_done(self, status: int) -> None:
        metrics, route = self.mw.metrics, route_of(self.scope)
        self.route = route
        now = perf_counter()
        metrics.handshake_duration.labels(route).observe(now - self.started)
        span = self.handshake
        span.update_name(f"WS {route}")
        span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        self.mw.user_attributes(span, self.scope)
        self.handshake_open = False
        if status != 101:
            metrics.connections_total.labels(route, "rejected").inc()
            span.set_status(Status(StatusCode.ERROR, f"handshake denied with {status}"))
            span.end()
            return
        metrics.connections_total.labels(route, "accepted").inc()
        metrics.connections_active.labels(route).inc()
        self.accepted_at = now
        self.link = Link(span.get_span_context())
        span.end()
        self._bind(route)

    def _bind(self, route: str) -> None:
        """Bind this connection's label children once (per connection, never per frame)."""
        m = self.mw.metrics
        self.in_text = m.messages.labels(route, "in", "text")
        self.in_binary = m.messages.labels(route, "in", "binary")
        self.out_text = m.messages.labels(route, "out", "text")
        self.out_binary = m.messages.labels(route, "out", "binary")
        self.size_in = m.message_size.labels(route, "in")
        self.size_out = m.message_size.labels(route, "out")
        self.processing = m.message_processing.labels(route)
        self.send_duration = m.send_duration.labels(route)
        self.tally = m.direct_tally(route)
        self.seam.report_to(self, self.tally)

    def _finish(self) -> None:
        if self.received_at is not None:
            self._frame_done(perf_counter())
        if self.accepted_at is None:
            if self.handshake_open:  # the app returned or raised without answering
                self.handshake_open = False
                self.handshake.set_status(Status(StatusCode.ERROR, "no handshake answer"))
                self.handshake.end()
            return
        metrics, route = self.mw.metrics, self.route
        metrics.connections_active.labels(route).dec()
        metrics.connection_duration.labels(route).observe(perf_counter() - self.accepted_at)
        code = self.close_code if self.close_code is not None else 1006
        metrics.disconnects.labels(route, self.initiator, close_code_label(code)).inc()
        self._close_record(code)

    def _close_record(self, code: int) -> None:
        frames_in, _, bytes_in, _ = self.counts
        frames_out, bytes_out = self._sent()
        links = [self.link] if self.link else None
        span = self.mw.tracer.start_span(f"WS {self.route} close", links=links, attributes={
            "http.route": self.route,
            "network.protocol.name": "websocket",
            "websocket.close.code": code,
            "websocket.close.reason": self.close_reason[:123],
            "websocket.close.initiator": self.initiator,
            "websocket.messages.received": frames_in,
            "websocket.messages.sent": frames_out,
            "websocket.bytes.received": bytes_in,
            "websocket.bytes.sent": bytes_out,
        })  # fmt: skip
        span.end()
