"""Telemetry for Server-Sent Events: an HTTP response of type ``text/event-stream``,
where every event is a frame (direction ``out``, type ``event``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Link, SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..types import EVENTS_KEY
from ._tracing import route_of, start_frame_span

if TYPE_CHECKING:
    from .telemetry import TelemetryMiddleware

__all__ = ["EventStreamRecorder", "wants_event_stream"]


def wants_event_stream(scope: Scope) -> bool:
    """An ``EventSource`` sends ``Accept: text/event-stream``; nothing else is wrapped."""
    return any(k == b"accept" and b"text/event-stream" in v for k, v in scope["headers"])


class EventStreamRecorder:
    def __init__(self, mw: TelemetryMiddleware, scope: Scope) -> None:
        self.mw, self.scope = mw, scope
        self.started = time.perf_counter()
        self.route = "unknown"
        self.active = False
        self.initiator = "server"
        self.events = 0
        self.link: Link | None = None
        self.out: Any = None

    async def run(self, app: ASGIApp, receive: Receive, send: Send) -> None:
        self._send, self._receive = send, receive
        try:
            await app(self.scope, self.receive, self.send)
        finally:
            if self.active:
                self._finish()

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.initiator = "client"
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._start(message)
        elif kind == "http.response.body" and self.active:
            await self._body(message)
            return
        await self._send(message)

    def _start(self, message: Message) -> None:
        ctype = next(
            (v for k, v in message.get("headers", []) if k.lower() == b"content-type"), b""
        )
        if not ctype.startswith(b"text/event-stream"):
            return
        self.active = True
        self.route = route = route_of(self.scope)
        m = self.mw.metrics
        m.connections_total.labels(route, "accepted").inc()
        m.connections_active.labels(route).inc()
        m.handshake_duration.labels(route).observe(time.perf_counter() - self.started)
        span = self.mw.tracer.start_span(f"SSE {route}", kind=SpanKind.SERVER, attributes={
            "http.route": route, "http.response.status_code": int(message["status"]),
            "network.protocol.name": "sse",
        })  # fmt: skip
        self.mw.user_attributes(span, self.scope)
        self.link = Link(span.get_span_context())
        span.end()
        self.out = (m.messages.labels(route, "out", "event"), m.message_size.labels(route, "out"),
                    m.send_duration.labels(route))  # fmt: skip

    async def _body(self, message: Message) -> None:
        body = message.get("body", b"")
        events = message.get(EVENTS_KEY)
        if events is None:  # a text/event-stream response not ours: count its blank lines
            events = body.count(b"\n\n") if body and not body.startswith(b":") else 0
        span = None
        if events and self.mw.sampler():
            span = start_frame_span(self.mw.tracer, f"SSE {self.route} send", SpanKind.PRODUCER,
                                    self.route, len(body), self.link)  # fmt: skip
        started = time.perf_counter()
        try:
            await self._send(message)
        finally:
            if events:
                counter, size, duration = self.out
                counter.inc(events)
                size.observe(len(body))
                duration.observe(time.perf_counter() - started)
                self.events += events
            if span is not None:
                span.end()

    def _finish(self) -> None:
        m, route = self.mw.metrics, self.route
        m.connections_active.labels(route).dec()
        m.connection_duration.labels(route).observe(time.perf_counter() - self.started)
        m.disconnects.labels(route, self.initiator, "none").inc()
        links = [self.link] if self.link else None
        self.mw.tracer.start_span(f"SSE {route} close", links=links, attributes={
            "http.route": route, "sse.close.initiator": self.initiator,
            "sse.events.sent": self.events,
        }).end()  # fmt: skip
