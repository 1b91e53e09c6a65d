"""Prometheus metrics for asgi_rt, and an ASGI app that exposes them.

Every metric is prefixed ``asgi_rt_``; ``route`` is the route template, never the raw
path; every label takes values from a bounded set. Time buckets start at 50 µs and
size buckets at 64 B. One :class:`Metrics` per registry: share it between the
middlewares and managers of an app (``TelemetryMiddleware(app, metrics=metrics)``).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Receive, Scope, Send

from ._families import Families

__all__ = [
    "CLOSE_CODES",
    "SIZE_BUCKETS",
    "TIME_BUCKETS",
    "Metrics",
    "MetricsApp",
    "close_code_label",
    "metrics_app",
]

TIME_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # fmt: skip
SIZE_BUCKETS = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)
DURATION_BUCKETS = (0.1, 1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400)
CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011,
                         1012, 1013, 1014, 1015})  # fmt: skip


def close_code_label(code: int | None) -> str:
    """Bucket a close code into a bounded label value."""
    if code is None:
        return "none"
    if code in CLOSE_CODES:
        return str(code)
    if 3000 <= code <= 3999:
        return "3xxx"
    if 4000 <= code <= 4999:
        return "4xxx"
    return "other"


def _multiprocess_enabled() -> bool:
    # prometheus_client switches itself to multiprocess values on this variable; we follow it
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


# attribute, kind, name (after the asgi_rt_ prefix), help, labels, buckets
_METRICS: tuple[tuple[str, str, str, str, tuple[str, ...], tuple[float, ...]], ...] = (
    ("connections_active", "gauge", "connections_active", "Open WebSockets.", ("route",), ()),
    (
        "connections_total",
        "counter",
        "connections_total",
        "Handshakes by outcome (accepted, rejected).",
        ("route", "outcome"),
        (),
    ),
    (
        "handshake_duration",
        "histogram",
        "handshake_duration_seconds",
        "Handshake start to accept or denial.",
        ("route",),
        TIME_BUCKETS,
    ),
    (
        "connection_duration",
        "histogram",
        "connection_duration_seconds",
        "Accept to close.",
        ("route",),
        DURATION_BUCKETS,
    ),
    (
        "disconnects",
        "counter",
        "disconnects_total",
        "Closes by initiator and close code.",
        ("route", "initiator", "code"),
        (),
    ),
    (
        "messages",
        "counter",
        "messages_total",
        "Frames (SSE: events) by direction and type.",
        ("route", "direction", "type"),
        (),
    ),
    (
        "message_size",
        "histogram",
        "message_size_bytes",
        "Frame payload size.",
        ("route", "direction"),
        SIZE_BUCKETS,
    ),
    (
        "message_processing",
        "histogram",
        "message_processing_seconds",
        "A received frame to the app's next receive.",
        ("route",),
        TIME_BUCKETS,
    ),
    (
        "send_duration",
        "histogram",
        "send_duration_seconds",
        "Time inside send: transport backpressure.",
        ("route",),
        TIME_BUCKETS,
    ),
    (
        "queue_wait",
        "histogram",
        "queue_wait_seconds",
        "Enqueued behind a pending send until written.",
        (),
        TIME_BUCKETS,
    ),
    ("queue_depth", "gauge", "queue_depth", "Messages queued behind pending sends.", (), ()),
    (
        "messages_dropped",
        "counter",
        "messages_dropped_total",
        "Messages dropped by the overflow policy.",
        ("reason",),
        (),
    ),
    (
        "slow_consumer_disconnects",
        "counter",
        "slow_consumer_disconnects_total",
        "Connections closed 1013 (queue or send timeout).",
        (),
        (),
    ),
    (
        "auth_failures",
        "counter",
        "auth_failures_total",
        "Authentication failures.",
        ("reason",),
        (),
    ),
    (
        "handshake_rejections",
        "counter",
        "handshake_rejections_total",
        "Handshakes refused before accept.",
        ("reason",),
        (),
    ),
    ("rooms_active", "gauge", "rooms_active", "Rooms with a local member.", (), ()),
    (
        "backplane_publish",
        "histogram",
        "backplane_publish_seconds",
        "Backplane publish latency.",
        (),
        TIME_BUCKETS,
    ),
    (
        "backplane_lag",
        "histogram",
        "backplane_lag_seconds",
        "Publish to local delivery.",
        (),
        TIME_BUCKETS,
    ),
    (
        "backplane_listener_up",
        "gauge",
        "backplane_listener_up",
        "1 while the backplane listener is connected.",
        (),
        (),
    ),
    (
        "heartbeat_closes",
        "counter",
        "heartbeat_closes_total",
        "Closes by the app-level heartbeat or idle timeout.",
        ("reason",),
        (),
    ),
    (
        "event_loop_lag",
        "histogram",
        "event_loop_lag_seconds",
        "How late a periodic timer fired.",
        (),
        TIME_BUCKETS,
    ),
    (
        "backplane_reconnects",
        "counter",
        "backplane_reconnects_total",
        "Backplane listener reconnections.",
        (),
        (),
    ),
)

# how multiprocess mode combines the workers' gauges, where a sum is not the answer
_GAUGE_MODES = {"backplane_listener_up": ("livemin",)}


class Metrics:
    """The asgi_rt metric families in one registry.

    Args:
        registry: where to register (default: prometheus_client's global ``REGISTRY``).
        multiprocess: build multiprocess-safe ``prometheus_client`` metrics (gauges as
            ``livesum``). Default: whatever prometheus_client itself is configured for,
            i.e. whether ``PROMETHEUS_MULTIPROC_DIR`` is set.

    Raises:
        ValueError: the registry already holds asgi_rt metrics (share one ``Metrics``).
    """

    connections_active: Any  # gauge
    connections_total: Any  # counter
    handshake_duration: Any  # histogram
    connection_duration: Any  # histogram
    disconnects: Any  # counter
    messages: Any  # counter
    message_size: Any  # histogram
    message_processing: Any  # histogram
    send_duration: Any  # histogram
    queue_wait: Any  # histogram
    queue_depth: Any  # gauge
    messages_dropped: Any  # counter
    slow_consumer_disconnects: Any  # counter
    auth_failures: Any  # counter
    handshake_rejections: Any  # counter
    rooms_active: Any  # gauge
    backplane_publish: Any  # histogram
    backplane_lag: Any  # histogram
    backplane_listener_up: Any  # gauge
    heartbeat_closes: Any  # counter
    event_loop_lag: Any  # histogram
    backplane_reconnects: Any  # counter

    def __init__(
        self, registry: CollectorRegistry | None = None, *, multiprocess: bool | None = None
    ) -> None:
        self.registry = REGISTRY if registry is None else registry
        self.multiprocess = _multiprocess_enabled() if multiprocess is None else multiprocess
        families = Families(self.registry, multiprocess=self.multiprocess)
        for attribute, kind, name, doc, labels, buckets in _METRICS:
            make = getattr(families, kind)
            extra = (buckets,) if kind == "histogram" else _GAUGE_MODES.get(attribute, ())
            setattr(self, attribute, make("asgi_rt_" + name, doc, list(labels), *extra))
        self._managers: weakref.WeakSet[Any] = weakref.WeakSet()
        families.register()

    def watch(self, manager: Any) -> None:
        """Export a ConnectionManager's queue depth, drops and slow-consumer closes.

        Read from ``manager.stats()`` at scrape time and summed over every watched
        manager. In multiprocess mode a scrape reads files, not this process, so there
        each manager writes its values every second instead, while it runs
        (:meth:`export_forever`, started by ``async with manager``).
        """
        if not self.multiprocess and not self._managers:
            for family, values in self._exported():
                family.functions.append(partial(self._sum_over_managers, values))
        self._managers.add(manager)

    def _exported(self) -> list[tuple[Any, Callable[[list[Any]], Samples]]]:
        """Each family read from managers' stats, and the function that reads it."""
        return [
            (self.queue_depth, _depth), (self.messages_dropped, _drops),
            (self.slow_consumer_disconnects, _slow), (self.rooms_active, _rooms),
            (self.backplane_listener_up, _listener_up),
            (self.backplane_reconnects, _reconnects), (self.heartbeat_closes, _heartbeat_closes),
        ]  # fmt: skip

    def _sum_over_managers(self, values: Callable[[list[Any]], Samples]) -> Samples:
        return values(list(self._managers))

    async def export_forever(self, manager: Any, interval: float = 1.0) -> None:
        """Multiprocess mode: write ``manager``'s queue depth, drops, slow-consumer closes,
        rooms and backplane state every ``interval`` seconds (as increments, so several
        managers and workers add up). A manager runs this while it is entered."""
        exported = self._exported()
        last: dict[tuple[int, tuple[str, ...]], float] = {}
        while True:
            for index, (family, values) in enumerate(exported):
                for labels, value in values([manager]):
                    key = (index, labels)
                    family.labels(*labels).inc(value - last.get(key, 0.0))
                    last[key] = value
            await anyio.sleep(interval)

    def handshake_rejected(self, reason: str, scope: Scope) -> None:
        """Count a refusal; pass as ``HandshakeMiddleware(on_reject=...)``."""
        self.handshake_rejections.labels(reason).inc()

    def auth_failed(self, reason: str, scope: Scope) -> None:
        """Count an auth failure; pass as ``FirstMessageAuthMiddleware(on_failure=...)``."""
        self.auth_failures.labels(reason).inc()


Samples = list[tuple[tuple[str, ...], float]]


def _heartbeat_closes(managers: list[Any]) -> Samples:
    stats = [m.stats() for m in managers]
    return [
        (("idle_timeout",), float(sum(s.idle_timeouts for s in stats))),
        (("heartbeat_timeout",), float(sum(s.heartbeat_timeouts for s in stats))),
    ]


def _backends(managers: list[Any]) -> list[Any]:
    return [m.backend for m in managers if hasattr(m, "backend")]


def _rooms(managers: list[Any]) -> Samples:
    rooms = [m for m in managers if hasattr(m, "rooms")]
    return [((), float(sum(len(m.rooms()) for m in rooms)))] if rooms else []


def _listener_up(managers: list[Any]) -> Samples:
    backends = _backends(managers)
    if not backends:
        return []
    return [((), float(min(int(getattr(b, "listener_up", True)) for b in backends)))]


def _reconnects(managers: list[Any]) -> Samples:
    backends = _backends(managers)
    return [((), float(sum(getattr(b, "reconnects", 0) for b in backends)))] if backends else []


def _depth(managers: list[Any]) -> Samples:
    return [((), float(sum(c.queued for m in managers for c in m)))]


def _drops(managers: list[Any]) -> Samples:
    totals = dict.fromkeys(("drop_oldest", "drop_newest", "coalesced", "closed"), 0.0)
    for manager in managers:
        s = manager.stats()
        totals["drop_oldest"] += s.dropped_oldest
        totals["drop_newest"] += s.dropped_newest
        totals["coalesced"] += s.coalesced
        totals["closed"] += s.dropped_closed + s.discarded_on_close
    return [((reason,), value) for reason, value in totals.items()]


def _slow(managers: list[Any]) -> Samples:
    stats = [m.stats() for m in managers]
    return [((), float(sum(s.slow_consumer_disconnects + s.send_timeouts for s in stats)))]


class MetricsApp:
    """The ASGI exposition app :func:`metrics_app` returns (a class, so that Starlette's
    ``Route("/metrics", metrics_app())`` treats it as an ASGI app, not a view function)."""

    def __init__(self, registry: CollectorRegistry, multiprocess: bool) -> None:
        self.registry = registry
        self.multiprocess = multiprocess

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        accept = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"accept"), "")
        source: Any = self.registry
        if self.multiprocess:
            source = CollectorRegistry()
            MultiProcessCollector(source)  # type: ignore[no-untyped-call]
        encoder, content_type = choose_encoder(accept)
        body = encoder(source)
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def metrics_app(
    registry: CollectorRegistry | None = None, *, multiprocess: bool | None = None
) -> ASGIApp:
    """An ASGI app serving the Prometheus exposition (OpenMetrics when the scraper asks).

    Mount it with ``app.add_route("/metrics", metrics_app())`` or ``app.mount(...)``. In
    multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set, e.g. ``uvicorn --workers N``)
    each scrape aggregates every worker's files, whichever worker answers.
    """
    chosen = REGISTRY if registry is None else registry
    return MetricsApp(chosen, _multiprocess_enabled() if multiprocess is None else multiprocess)
