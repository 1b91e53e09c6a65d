"""Tail-sampled slow frames on the wire: a real uvicorn, a real websockets client, the SDK
in-memory exporter. What is asserted is what an operator's backend would receive."""

from __future__ import annotations

import math
import time

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.sync.client import connect

from asgi_rt import Metrics, TelemetryMiddleware

from .._poll import wait_for
from .._server import RunningServer

pytestmark = pytest.mark.server

# The slow frame's processing is a real duration (the feature is about wall time), and it
# always exceeds THRESHOLD. No assertion depends on how fast the other frames are: the
# no-span test uses FAR, which no echo reaches, so a loaded machine cannot flip a result.
THRESHOLD = 0.2
SLOW = 0.35
FAR = 60.0


async def handler(websocket: WebSocket) -> None:
    """Echo; a frame ``slow`` is processed for SLOW seconds and answered twice."""
    await websocket.accept()
    async for text in websocket.iter_text():
        if text == "slow":
            await anyio.sleep(SLOW)  # the stimulus: processing that lasts SLOW seconds
            await websocket.send_text("part")
        await websocket.send_text(text)


def serve(exporter: InMemorySpanExporter, **options: object) -> RunningServer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = TelemetryMiddleware(Starlette(routes=[WebSocketRoute("/ws/{room}", handler)]),
                              metrics=Metrics(CollectorRegistry()), tracer_provider=provider,
                              loop_lag=False, **options)  # type: ignore[arg-type]  # fmt: skip
    server = RunningServer(app)
    server.start()
    return server


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def session(server: RunningServer, exporter: InMemorySpanExporter, frames: list[str]) -> None:
    """Send each frame, read its answers, close; wait until the close record is exported."""
    with connect(f"{server.url}/ws/lobby") as ws:
        for text in frames:
            ws.send(text)
            if text == "slow":
                assert ws.recv(timeout=5) == "part"
            assert ws.recv(timeout=5) == text
    wait_for(lambda: any(s.name.endswith(" close") for s in exporter.get_finished_spans()),
             what="the close record")  # fmt: skip


def receives(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CONSUMER]


def test_a_slow_unsampled_frame_gets_one_backdated_span(exporter: InMemorySpanExporter) -> None:
    server = serve(exporter, frame_sample_ratio=0.0, slow_frame_seconds=THRESHOLD)
    try:
        sent_at = time.time_ns()
        session(server, exporter, ["slow"])
    finally:
        server.stop()
    (span,) = receives(exporter)
    handshake = next(s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER)
    assert span.name == "WS /ws/{room} receive"
    assert dict(span.attributes or {}) == {
        "http.route": "/ws/{room}", "messaging.message.body.size": 4,
        "asgi_rt.frame.sends": 2, "asgi_rt.frame.sent_bytes": 8, "asgi_rt.sampled": "slow",
    }  # fmt: skip
    assert span.start_time is not None and span.end_time is not None
    assert span.start_time >= sent_at
    assert span.end_time - span.start_time >= SLOW * 1e9 * 0.9
    assert span.links[0].context.span_id == handshake.context.span_id
    assert not [s for s in exporter.get_finished_spans() if s.kind == SpanKind.PRODUCER]


def test_frames_under_the_threshold_get_no_span(exporter: InMemorySpanExporter) -> None:
    server = serve(exporter, frame_sample_ratio=0.0, slow_frame_seconds=FAR)
    try:
        session(server, exporter, ["a", "slow", "c"])
    finally:
        server.stop()
    assert receives(exporter) == []


def test_head_sampled_frames_are_unchanged(exporter: InMemorySpanExporter) -> None:
    server = serve(exporter, frame_sample_ratio=1.0, slow_frame_seconds=THRESHOLD)
    try:
        session(server, exporter, ["a", "slow"])
    finally:
        server.stop()
    spans = receives(exporter)
    assert len(spans) == 2
    assert all("asgi_rt.sampled" not in (s.attributes or {}) for s in spans)
    assert len([s for s in exporter.get_finished_spans() if s.kind == SpanKind.PRODUCER]) == 3


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10, 10))
def test_threshold_validation_names_the_option_and_value(value: float) -> None:
    ok = math.isfinite(value) and value > 0
    if ok:
        TelemetryMiddleware(Starlette(), metrics=Metrics(CollectorRegistry()),
                            slow_frame_seconds=value)  # fmt: skip
        return
    with pytest.raises(ValueError, match="slow_frame_seconds") as raised:
        TelemetryMiddleware(Starlette(), metrics=Metrics(CollectorRegistry()),
                            slow_frame_seconds=value)  # fmt: skip
    assert repr(value) in str(raised.value)


@pytest.mark.parametrize("value", ["0.1", True, [0.1]])
def test_threshold_of_the_wrong_type_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="slow_frame_seconds") as raised:
        TelemetryMiddleware(Starlette(), metrics=Metrics(CollectorRegistry()),
                            slow_frame_seconds=value)  # type: ignore[arg-type]  # fmt: skip
    assert repr(value) in str(raised.value)
