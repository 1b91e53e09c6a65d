"""TelemetryMiddleware: spans with the SDK's in-memory exporter, exact metric values."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import FirstMessageAuthMiddleware, HandshakeMiddleware, Metrics, TelemetryMiddleware
from asgi_rt.testing import WebSocketRejected, websocket_session
from asgi_rt.types import EVENTS_KEY

pytestmark = pytest.mark.anyio


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def provider_for(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text * 2)
    # iter_text ends on disconnect


async def closer(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.receive_text()
    await websocket.close(4001, "bye")


def build(
    exporter: InMemorySpanExporter, ratio: float = 1.0, **options: Any
) -> tuple[Any, Metrics]:
    metrics = Metrics(CollectorRegistry())
    app = Starlette(routes=[WebSocketRoute("/ws/{room}", echo), WebSocketRoute("/close", closer)])
    telemetry = TelemetryMiddleware(app, metrics=metrics, tracer_provider=provider_for(exporter),
                                    frame_sample_ratio=ratio, **options)  # fmt: skip
    return telemetry, metrics


def value(metrics: Metrics, name: str, labels: dict[str, str]) -> float:
    got = metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def spans(exporter: InMemorySpanExporter, kind: SpanKind | None = None) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if kind is None or s.kind == kind]


async def test_scripted_session_gives_exact_metrics(exporter: InMemorySpanExporter) -> None:
    app, metrics = build(exporter)
    async with websocket_session(app, "/ws/lobby") as ws:
        for text in ["a" * 10, "b" * 100, "c" * 1000]:
            await ws.send_text(text)
            await ws.receive_text()
        assert value(metrics, "asgi_rt_connections_active", {"route": "/ws/{room}"}) == 1
    route = {"route": "/ws/{room}"}
    assert (
        value(metrics, "asgi_rt_messages_total", {**route, "direction": "in", "type": "text"}) == 3
    )
    assert (
        value(metrics, "asgi_rt_messages_total", {**route, "direction": "out", "type": "text"}) == 3
    )
    assert value(metrics, "asgi_rt_message_size_bytes_sum", {**route, "direction": "in"}) == 1110
    assert value(metrics, "asgi_rt_message_size_bytes_sum", {**route, "direction": "out"}) == 2220
    assert value(metrics, "asgi_rt_message_size_bytes_bucket",
                 {**route, "direction": "in", "le": "64.0"}) == 1  # fmt: skip
    assert value(metrics, "asgi_rt_message_processing_seconds_count", route) == 3
    assert value(metrics, "asgi_rt_send_duration_seconds_count", route) == 3
    assert value(metrics, "asgi_rt_connections_total", {**route, "outcome": "accepted"}) == 1
    assert value(metrics, "asgi_rt_connections_active", route) == 0
    assert value(metrics, "asgi_rt_disconnects_total",
                 {**route, "initiator": "client", "code": "1000"}) == 1  # fmt: skip
    assert value(metrics, "asgi_rt_connection_duration_seconds_count", route) == 1


async def test_spans_named_by_route_linked_to_the_handshake(exporter: InMemorySpanExporter) -> None:
    app, _ = build(exporter)
    async with websocket_session(app, "/ws/42") as ws:
        await ws.send_text("hi")
        await ws.receive_text()
    (handshake,) = spans(exporter, SpanKind.SERVER)
    assert handshake.name == "WS /ws/{room}"
    assert handshake.attributes is not None
    assert handshake.attributes["http.route"] == "/ws/{room}"
    assert handshake.attributes["http.response.status_code"] == 101
    (received,) = spans(exporter, SpanKind.CONSUMER)
    (sent,) = spans(exporter, SpanKind.PRODUCER)
    assert received.name == "WS /ws/{room} receive"
    assert received.links[0].context.span_id == handshake.context.span_id
    assert received.parent is None or received.parent.trace_id != handshake.context.trace_id
    assert sent.parent is not None and sent.parent.span_id == received.context.span_id
    assert sent.attributes is not None and sent.attributes["messaging.message.body.size"] == 4
    close = next(s for s in spans(exporter) if s.name.endswith(" close"))
    assert close.attributes is not None
    assert close.attributes["websocket.close.code"] == 1000
    assert close.attributes["websocket.close.initiator"] == "client"
    assert close.attributes["websocket.messages.received"] == 1


async def test_server_close_code_and_reason_are_recorded(exporter: InMemorySpanExporter) -> None:
    app, metrics = build(exporter)
    async with websocket_session(app, "/close") as ws:
        await ws.send_text("x")
        assert await ws.receive_close() == 4001
    labels = {"route": "/close", "initiator": "server", "code": "4xxx"}
    assert value(metrics, "asgi_rt_disconnects_total", labels) == 1
    close = next(s for s in spans(exporter) if s.name.endswith(" close"))
    assert close.attributes is not None and close.attributes["websocket.close.reason"] == "bye"


@pytest.mark.parametrize(("ratio", "expected"), [(0.0, 0), (1.0, 20)])
async def test_frame_sampling_ratio(
    exporter: InMemorySpanExporter, ratio: float, expected: int
) -> None:
    app, metrics = build(exporter, ratio)
    async with websocket_session(app, "/ws/a") as ws:
        for _ in range(10):
            await ws.send_text("x")
            await ws.receive_text()
    frame_spans = spans(exporter, SpanKind.CONSUMER) + spans(exporter, SpanKind.PRODUCER)
    assert len(frame_spans) == expected
    assert len(spans(exporter, SpanKind.SERVER)) == 1  # the handshake is always offered
    assert value(metrics, "asgi_rt_messages_total",
                 {"route": "/ws/{room}", "direction": "in", "type": "text"}) == 10  # fmt: skip


async def test_rejections_and_auth_failures_feed_the_same_registry(
    exporter: InMemorySpanExporter,
) -> None:
    metrics = Metrics(CollectorRegistry())

    async def authenticate(token: str) -> str | None:
        return "ada" if token == "good" else None

    inner = Starlette(routes=[WebSocketRoute("/ws/{room}", echo)])
    app = TelemetryMiddleware(
        HandshakeMiddleware(
            FirstMessageAuthMiddleware(
                inner, authenticate=authenticate, on_failure=metrics.auth_failed
            ),
            allowed_origins=["https://ok.example"], on_reject=metrics.handshake_rejected,
        ),
        metrics=metrics, tracer_provider=provider_for(exporter),
    )  # fmt: skip
    version = (b"sec-websocket-version", b"13")
    with pytest.raises(WebSocketRejected):
        async with websocket_session(app, "/ws/a", headers=[version, (b"origin", b"https://evil")]):
            pass
    async with websocket_session(
        app, "/ws/a", headers=[version, (b"origin", b"https://ok.example")]
    ) as ws:
        await ws.send_json({"type": "auth", "token": "bad"})
        assert await ws.receive_close() == 1008
    assert value(metrics, "asgi_rt_handshake_rejections_total", {"reason": "origin"}) == 1
    assert value(metrics, "asgi_rt_auth_failures_total", {"reason": "failed"}) == 1
    assert (
        value(metrics, "asgi_rt_connections_total", {"route": "unknown", "outcome": "rejected"})
        == 1
    )
    denied = next(
        s for s in spans(exporter, SpanKind.SERVER) if s.status.status_code.name == "ERROR"
    )
    assert denied.attributes is not None and denied.attributes["http.response.status_code"] == 403


async def test_a_raising_span_attributes_hook_never_breaks_traffic(
    exporter: InMemorySpanExporter,
) -> None:
    def hook(scope: Any) -> dict[str, str]:
        raise RuntimeError("hook bug")

    app, _ = build(exporter, span_attributes=hook)
    async with websocket_session(app, "/ws/a") as ws:
        await ws.send_text("still")
        assert await ws.receive_text() == "stillstill"


async def test_span_attributes_hook_adds_to_the_handshake_span(
    exporter: InMemorySpanExporter,
) -> None:
    app, _ = build(exporter, span_attributes=lambda scope: {"tenant": "acme"})
    async with websocket_session(app, "/ws/a"):
        pass
    (handshake,) = spans(exporter, SpanKind.SERVER)
    assert handshake.attributes is not None and handshake.attributes["tenant"] == "acme"


async def test_sse_events_are_counted_one_by_one(exporter: InMemorySpanExporter) -> None:
    metrics = Metrics(CollectorRegistry())

    async def stream(request: Any) -> StreamingResponse:
        async def events() -> Any:
            yield "data: one\n\n"
            yield ": ping\n\n"  # a heartbeat comment on its own: not an event
            yield "event: tick\ndata: two\n\n: heartbeat\n\n"
            yield "data: three\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    app = TelemetryMiddleware(Starlette(routes=[Route("/events/{topic}", stream)]), metrics=metrics,
                              tracer_provider=provider_for(exporter))  # fmt: skip
    sent: list[Any] = []
    scope = {
        "type": "http", "method": "GET", "path": "/events/x", "raw_path": b"/events/x",
        "query_string": b"", "headers": [(b"accept", b"text/event-stream")], "root_path": "",
        "scheme": "http", "server": ("t", 80), "client": ("c", 1),
    }  # fmt: skip

    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await anyio.sleep_forever()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    labels = {"route": "/events/{topic}", "direction": "out", "type": "event"}
    assert value(metrics, "asgi_rt_messages_total", labels) == 4
    assert value(metrics, "asgi_rt_connections_active", {"route": "/events/{topic}"}) == 0
    assert any(s.name == "SSE /events/{topic}" for s in spans(exporter))


async def test_plain_http_is_not_wrapped(exporter: InMemorySpanExporter) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(send)

    def sentinel(message: Any) -> None: ...

    mw = TelemetryMiddleware(
        app, registry=CollectorRegistry(), tracer_provider=provider_for(exporter)
    )
    await mw({"type": "http", "headers": []}, None, sentinel)  # type: ignore[arg-type]
    assert seen == [sentinel]


def test_ratio_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="frame_sample_ratio"):
        TelemetryMiddleware(Starlette(), registry=CollectorRegistry(), frame_sample_ratio=1.5)


async def test_sampled_frames_leave_trace_id_exemplars(exporter: InMemorySpanExporter) -> None:
    from prometheus_client.openmetrics.exposition import generate_latest

    app, metrics = build(exporter)
    async with websocket_session(app, "/ws/a") as ws:
        await ws.send_text("x")
        await ws.receive_text()
    received = spans(exporter, SpanKind.CONSUMER)[0]
    text = generate_latest(metrics.registry).decode()
    assert f'trace_id="{received.context.trace_id:032x}"' in text


async def test_sse_event_count_comes_from_the_transport(exporter: InMemorySpanExporter) -> None:
    """A chunk that says how many events it carries is counted so, not parsed."""
    metrics = Metrics(CollectorRegistry())

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})  # fmt: skip
        body = b"data: one\n\ndata: two\n\n"
        await send({"type": "http.response.body", "body": body, "more_body": True, EVENTS_KEY: 5})
        await send({"type": "http.response.body", "body": b"retry: 10\n\n", EVENTS_KEY: 0})

    mw = TelemetryMiddleware(app, metrics=metrics, tracer_provider=provider_for(exporter))
    scope = {"type": "http", "path": "/e", "headers": [(b"accept", b"text/event-stream")]}

    async def receive() -> Any:
        raise AssertionError("not read")

    async def send(message: Any) -> None:
        pass

    await mw(scope, receive, send)
    labels = {"route": "unknown", "direction": "out", "type": "event"}
    assert value(metrics, "asgi_rt_messages_total", labels) == 5


async def test_send_spans_off_records_sends_as_events_of_the_frame_span(
    exporter: InMemorySpanExporter,
) -> None:
    app, metrics = build(exporter, send_spans=False)
    async with websocket_session(app, "/ws/42") as ws:
        await ws.send_text("hi")
        assert await ws.receive_text() == "hihi"
    assert spans(exporter, SpanKind.PRODUCER) == []
    (received,) = spans(exporter, SpanKind.CONSUMER)
    (event,) = received.events
    assert event.name == "send"
    assert event.attributes is not None
    assert event.attributes["messaging.message.body.size"] == 4
    route = {"route": "/ws/{room}"}
    assert value(metrics, "asgi_rt_send_duration_seconds_count", route) == 1


def test_send_spans_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="send_spans must be a bool, got 'no'"):
        TelemetryMiddleware(Starlette(), registry=CollectorRegistry(), send_spans="no")  # type: ignore[arg-type]
