"""The echo benchmark's server: one Starlette echo app per variant, run by uvicorn.

Every variant serves the same Starlette app:

* ``/echo``: ``await websocket.accept()``, then ``send_text(await receive_text())`` until
  the client disconnects;
* ``GET /stats``: JSON: spans exported so far (after a flush) and, for the asgi_rt
  variants, what the middleware recorded (frames, connections, closes).

``BENCH_VARIANT`` picks what wraps it:

* ``bare``: nothing;
* ``telemetry_0.01`` / ``telemetry_1.0``: ``asgi_rt.TelemetryMiddleware`` with a fresh
  ``CollectorRegistry`` ``Metrics`` and an SDK ``TracerProvider`` whose
  ``BatchSpanProcessor`` feeds a no-op exporter, ``frame_sample_ratio`` 0.01 / 1.0;
* ``otel_asgi``: ``opentelemetry.instrumentation.asgi.OpenTelemetryMiddleware`` with the
  same SDK set-up (``tracer_provider`` passed in).

Two more, for diagnosis only (not in the default run): ``telemetry_0.0`` (metrics, no
frame spans) and ``telemetry_1.0_noproc`` (every frame sampled, but the SDK provider has
no span processor at all: what creating the spans costs, without the batch queue and its
worker thread); and ``telemetry_1.0_events``: every frame traced with ``send_spans=False``
(one span per round trip, the send an event on it); ``telemetry_0.01_slow``: 1 % head
sampling plus a span for every frame slower than 10 ms (``slow_frame_seconds=0.01``).

Run with ``python -m bench.echo_server`` (prints ``{"port", "stall_port", "pid"}`` once
listening; ``BENCH_WS`` picks uvicorn's WebSocket implementation, default
``websockets-sansio``), or ``BENCH_VARIANT=bare uvicorn --factory bench.echo_server:make_app``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket, WebSocketDisconnect

from ._serve import app_for_variant, serve

VARIANTS = ("bare", "telemetry_0.01", "telemetry_1.0", "otel_asgi", "router")
EXTRA_VARIANTS = (
    "telemetry_0.0", "telemetry_1.0_noproc", "telemetry_1.0_events", "telemetry_0.01_slow",
)  # fmt: skip
ROUTE = "/echo"


class NullExporter(SpanExporter):
    """Accepts every batch and drops it; counts the spans it was given.

    The batch processor calls ``export`` under its own lock, so the count needs none.
    """

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


class Tracing:
    """An SDK TracerProvider with a BatchSpanProcessor to a :class:`NullExporter`."""

    def __init__(self, *, processor: bool = True) -> None:
        self.exporter = NullExporter()
        self.provider = TracerProvider()
        if processor:
            self.provider.add_span_processor(BatchSpanProcessor(self.exporter))

    def stats(self) -> dict[str, Any]:
        self.provider.force_flush()
        return {"spans_exported": self.exporter.exported}


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


def echo_app(stats: Callable[[], dict[str, Any]]) -> Starlette:
    async def stats_endpoint(request: Request) -> JSONResponse:
        return JSONResponse(stats())

    return Starlette(routes=[WebSocketRoute(ROUTE, echo), Route("/stats", stats_endpoint)])


def bare_app() -> ASGIApp:
    return echo_app(lambda: {"variant": "bare"})


def telemetry_app(
    ratio: float, *, processor: bool = True, send_spans: bool = True, slow: float | None = None
) -> ASGIApp:
    from prometheus_client import CollectorRegistry

    from asgi_rt.metrics import Metrics
    from asgi_rt.middleware.telemetry import TelemetryMiddleware

    tracing = Tracing(processor=processor)
    registry = CollectorRegistry()
    metrics = Metrics(registry)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"route": ROUTE, **labels})

    def stats() -> dict[str, Any]:
        return {
            "variant": f"telemetry_{ratio}",
            **tracing.stats(),
            "frames_in": value("asgi_rt_messages_total", direction="in", type="text"),
            "frames_out": value("asgi_rt_messages_total", direction="out", type="text"),
            "size_in_count": value("asgi_rt_message_size_bytes_count", direction="in"),
            "processing_count": value("asgi_rt_message_processing_seconds_count"),
            "send_duration_count": value("asgi_rt_send_duration_seconds_count"),
            "accepted": value("asgi_rt_connections_total", outcome="accepted"),
            "active": value("asgi_rt_connections_active"),
            "client_closes_1000": value(
                "asgi_rt_disconnects_total", initiator="client", code="1000"
            ),
        }

    app = echo_app(stats)
    return TelemetryMiddleware(
        app,
        metrics=metrics,
        tracer_provider=tracing.provider,
        frame_sample_ratio=ratio,
        send_spans=send_spans,
        slow_frame_seconds=slow,
    )


def router_app() -> ASGIApp:
    """Echo through ConnectionManager + Router: envelope decoding, validation, dispatch;
    the handler sends the same envelope back (compact JSON, so byte-identical)."""
    from asgi_rt import ConnectionManager, Router

    manager, router = ConnectionManager(), Router()

    @router.on("echo")
    async def echo_handler(conn: Any, data: Any) -> None:
        await conn.send('{"type":"echo","data":' + json.dumps(data) + "}")

    async def endpoint(websocket: WebSocket) -> None:
        async with manager.connect(websocket) as conn:
            await router.serve(conn)

    async def stats_endpoint(request: Request) -> JSONResponse:
        return JSONResponse({"variant": "router", **dataclasses.asdict(manager.stats())})

    return Starlette(routes=[WebSocketRoute(ROUTE, endpoint), Route("/stats", stats_endpoint)])


def otel_asgi_app() -> ASGIApp:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    tracing = Tracing()
    app = echo_app(lambda: {"variant": "otel_asgi", **tracing.stats()})
    wrapped: ASGIApp = OpenTelemetryMiddleware(app, tracer_provider=tracing.provider)
    return wrapped


def make_app() -> ASGIApp:
    """The app named by ``BENCH_VARIANT`` (for ``uvicorn --factory``)."""
    factories: dict[str, Callable[[], ASGIApp]] = {
        "bare": bare_app,
        "telemetry_0.01": lambda: telemetry_app(0.01),
        "telemetry_1.0": lambda: telemetry_app(1.0),
        "otel_asgi": otel_asgi_app,
        "router": router_app,
        "telemetry_0.0": lambda: telemetry_app(0.0),
        "telemetry_1.0_noproc": lambda: telemetry_app(1.0, processor=False),
        "telemetry_1.0_events": lambda: telemetry_app(1.0, send_spans=False),
        "telemetry_0.01_slow": lambda: telemetry_app(0.01, slow=0.01),
    }
    return app_for_variant(factories, "bare")


def main() -> None:
    serve(
        "bench.echo_server:make_app",
        ws=os.environ.get("BENCH_WS", "websockets-sansio"),
        lifespan="off",
    )


if __name__ == "__main__":
    main()
