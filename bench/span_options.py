"""What tracing every frame costs per echo round trip, for span designs an operator might accept.

    python -m bench.span_options             # ~10 s, one process, no server

Each option does, per round trip (one inbound frame, one send), what the telemetry
middleware's tracing would do, with the OpenTelemetry SDK (``TracerProvider`` +
``BatchSpanProcessor`` to an exporter that drops everything, as ``bench.echo`` uses):

* ``two_spans``: today's ``frame_sample_ratio=1.0``: a CONSUMER span for the inbound frame
  (attached as the current context) and a PRODUCER child for the send;
* ``span_plus_event``: one CONSUMER span per inbound frame, the send recorded as an event
  on it (``send`` with the size);
* ``one_span``: one CONSUMER span per inbound frame, sends only counted into its
  attributes when it ends;
* ``tail_slow``: no span unless the frame's processing took longer than a threshold
  (10 ms here; never in this loop): the cost for the frames that are not slow, which is two
  ``perf_counter`` calls;
* ``sampled_1pct``: today's default ``frame_sample_ratio=0.01``.

Prints µs per round trip (best of 5 runs of 20 000), and the projected ratio to bare of
an echo server whose bare round trip costs ``--bare-us`` of CPU and whose telemetry
without spans costs ``--base-us`` (both from ``bench.echo``: 1 / rt/s at one full core,
bare and ``telemetry_0.01``): ``bare / (base + option)``. A projection, not a measurement
of the server: ``bench.echo`` measures ``two_spans`` and ``sampled_1pct`` end to end.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

ROUTE = "/ws"
ATTRS: dict[str, str | int] = {"http.route": ROUTE, "messaging.message.body.size": 64}


class DropExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def options(tracer: trace.Tracer) -> dict[str, Callable[[], None]]:
    start = tracer.start_span
    perf = time.perf_counter

    def two_spans() -> None:
        span = start("WS /ws receive", kind=SpanKind.CONSUMER, attributes=ATTRS)
        ctx = trace.set_span_in_context(span)
        token = otel_context.attach(ctx)
        child = start("WS /ws send", context=ctx, kind=SpanKind.PRODUCER, attributes=ATTRS)
        child.end()
        otel_context.detach(token)
        span.end()

    def span_plus_event() -> None:
        span = start("WS /ws receive", kind=SpanKind.CONSUMER, attributes=ATTRS)
        span.add_event("send", {"messaging.message.body.size": 64})
        span.end()

    def one_span() -> None:
        span = start("WS /ws receive", kind=SpanKind.CONSUMER, attributes=ATTRS)
        span.set_attribute("asgi_rt.sends", 1)
        span.end()

    def tail_slow() -> None:
        began = perf()
        if perf() - began > 0.010:  # a slow frame: start a span backdated to ``began``
            start("WS /ws receive", kind=SpanKind.CONSUMER, attributes=ATTRS).end()

    def sampled_1pct(rand: Callable[[], float] = random.random) -> None:
        if rand() < 0.01:
            two_spans()

    return {
        "two_spans": two_spans,
        "span_plus_event": span_plus_event,
        "one_span": one_span,
        "tail_slow": tail_slow,
        "sampled_1pct": sampled_1pct,
    }


def per_call_us(fn: Callable[[], None], n: int, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.span_options", description=__doc__)
    p.add_argument("-n", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--bare-us", type=float, required=True, help="bare echo CPU per round trip")
    p.add_argument("--base-us", type=float, help="with telemetry at 1 %% spans (default: bare)")
    a = p.parse_args(argv)
    base = a.base_us or a.bare_us
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    tracer = provider.get_tracer("bench")
    print(f"{'option':<18}{'us / round trip':>16}{'projected vs bare':>19}")
    for name, fn in options(tracer).items():
        us = per_call_us(fn, a.n, a.runs)
        print(f"{name:<18}{us:>16.2f}{a.bare_us / (base + us):>19.2f}")
    provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
