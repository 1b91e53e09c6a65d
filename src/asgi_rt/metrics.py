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
from typing import TYPE_CHECKING, Any

import anyio
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Receive, Scope, Send

from ._families import CounterFamily, Families, FastFamily, GaugeFamily, HistogramFamily
from .backends.base import Backend, ListenerHealth

if TYPE_CHECKING:
    from .connections.manager import ConnectionManager
    from .rooms import RoomManager

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

    def __init__(
        self, registry: CollectorRegistry | None = None, *, multiprocess: bool | None = None
    ) -> None:
        self.registry = REGISTRY if registry is None else registry
        self.multiprocess = _multiprocess_enabled() if multiprocess is None else multiprocess
        f = Families(self.registry, multiprocess=self.multiprocess)
        self.connections_active: GaugeFamily = f.gauge(
            "asgi_rt_connections_active", "Open WebSockets.", ["route"]
        )
        self.connections_total: CounterFamily = f.counter(
            "asgi_rt_connections_total",
            "Handshakes by outcome (accepted, rejected).",
            ["route", "outcome"],
        )
        self.handshake_duration: HistogramFamily = f.histogram(
            "asgi_rt_handshake_duration_seconds",
            "Handshake start to accept or denial.",
            ["route"],
            TIME_BUCKETS,
        )
        self.connection_duration: HistogramFamily = f.histogram(
            "asgi_rt_connection_duration_seconds", "Accept to close.", ["route"], DURATION_BUCKETS
        )
        self.disconnects: CounterFamily = f.counter(
            "asgi_rt_disconnects_total",
            "Closes by initiator and close code.",
            ["route", "initiator", "code"],
        )
        self.messages: CounterFamily = f.counter(
            "asgi_rt_messages_total",
            "Frames (SSE: events) by direction and type.",
            ["route", "direction", "type"],
        )
        self.message_size: HistogramFamily = f.histogram(
            "asgi_rt_message_size_bytes",
            "Frame payload size.",
            ["route", "direction"],
            SIZE_BUCKETS,
        )
        self.message_processing: HistogramFamily = f.histogram(
            "asgi_rt_message_processing_seconds",
            "A received frame to the app's next receive.",
            ["route"],
            TIME_BUCKETS,
        )
        self.send_duration: HistogramFamily = f.histogram(
            "asgi_rt_send_duration_seconds",
            "Time inside send: transport backpressure.",
            ["route"],
            TIME_BUCKETS,
        )
        self.queue_wait: HistogramFamily = f.histogram(
            "asgi_rt_queue_wait_seconds",
            "Enqueued behind a pending send until written.",
            [],
            TIME_BUCKETS,
        )
        self.queue_depth: GaugeFamily = f.gauge(
            "asgi_rt_queue_depth", "Messages queued behind pending sends.", []
        )
        self.messages_dropped: CounterFamily = f.counter(
            "asgi_rt_messages_dropped_total", "Messages dropped by the overflow policy.", ["reason"]
        )
        self.slow_consumer_disconnects: CounterFamily = f.counter(
            "asgi_rt_slow_consumer_disconnects_total",
            "Connections closed 1013 (queue or send timeout).",
            [],
        )
        self.auth_failures: CounterFamily = f.counter(
            "asgi_rt_auth_failures_total", "Authentication failures.", ["reason"]
        )
        self.authorization_denials: CounterFamily = f.counter(
            "asgi_rt_authorization_denials_total",
            "RoomManager authorize refusals (a raising hook counts as one).",
            ["action"],
        )
        self.handshake_rejections: CounterFamily = f.counter(
            "asgi_rt_handshake_rejections_total", "Handshakes refused before accept.", ["reason"]
        )
        self.rooms_active: GaugeFamily = f.gauge(
            "asgi_rt_rooms_active", "Rooms with a local member.", []
        )
        self.backplane_publish: HistogramFamily = f.histogram(
            "asgi_rt_backplane_publish_seconds", "Backplane publish latency.", [], TIME_BUCKETS
        )
        self.backplane_lag: HistogramFamily = f.histogram(
            "asgi_rt_backplane_lag_seconds", "Publish to local delivery.", [], TIME_BUCKETS
        )
        self.backplane_listener_up: GaugeFamily = f.gauge(
            "asgi_rt_backplane_listener_up",
            "1 while the backplane listener is connected.",
            [],
            mode="livemin",
        )
        self.heartbeat_closes: CounterFamily = f.counter(
            "asgi_rt_heartbeat_closes_total",
            "Closes by the app-level heartbeat or idle timeout.",
            ["reason"],
        )
        self.event_loop_lag: HistogramFamily = f.histogram(
            "asgi_rt_event_loop_lag_seconds", "How late a periodic timer fired.", [], TIME_BUCKETS
        )
        self.backplane_reconnects: CounterFamily = f.counter(
            "asgi_rt_backplane_reconnects_total", "Backplane listener reconnections.", []
        )
        self._managers: weakref.WeakSet[ConnectionManager] = weakref.WeakSet()
        f.register()

    def watch(self, manager: ConnectionManager) -> None:
        """Export a ConnectionManager's queue depth, drops and slow-consumer closes.

        Read from ``manager.stats()`` at scrape time and summed over every watched
        manager. In multiprocess mode a scrape reads files, not this process, so there
        each manager writes its values every second instead, while it runs
        (:meth:`export_forever`, started by ``async with manager``).
        """
        if not self.multiprocess and not self._managers:
            for family, values in self._exported():
                if isinstance(family, FastFamily):  # always, outside multiprocess mode
                    family.functions.append(partial(self._sum_over_managers, values))
        self._managers.add(manager)

    def _exported(self) -> list[tuple[CounterFamily | GaugeFamily, Read]]:
        """Each family read from managers' stats, and the function that reads it."""
        return [
            (self.queue_depth, _depth), (self.messages_dropped, _drops),
            (self.slow_consumer_disconnects, _slow), (self.rooms_active, _rooms),
            (self.backplane_listener_up, _listener_up),
            (self.backplane_reconnects, _reconnects), (self.heartbeat_closes, _heartbeat_closes),
        ]  # fmt: skip

    def _sum_over_managers(self, values: Read) -> Samples:
        return values(list(self._managers))

    async def export_forever(self, manager: ConnectionManager, interval: float = 1.0) -> None:
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
Read = Callable[[list["ConnectionManager"]], Samples]


def _heartbeat_closes(managers: list[ConnectionManager]) -> Samples:
    stats = [m.stats() for m in managers]
    return [
        (("idle_timeout",), float(sum(s.idle_timeouts for s in stats))),
        (("heartbeat_timeout",), float(sum(s.heartbeat_timeouts for s in stats))),
    ]


def _room_managers(managers: list[ConnectionManager]) -> list[RoomManager]:
    from .rooms import RoomManager  # imported here: it imports this module's users

    return [m for m in managers if isinstance(m, RoomManager)]


def _backends(managers: list[ConnectionManager]) -> list[Backend]:
    return [m.backend for m in _room_managers(managers)]


def _rooms(managers: list[ConnectionManager]) -> Samples:
    rooms = _room_managers(managers)
    return [((), float(sum(len(m.rooms()) for m in rooms)))] if rooms else []


def _listener_up(managers: list[ConnectionManager]) -> Samples:
    backends = _backends(managers)
    if not backends:
        return []
    up = (b.listener_up if isinstance(b, ListenerHealth) else True for b in backends)
    return [((), float(min(int(u) for u in up)))]


def _reconnects(managers: list[ConnectionManager]) -> Samples:
    backends = _backends(managers)
    counts = (b.reconnects if isinstance(b, ListenerHealth) else 0 for b in backends)
    return [((), float(sum(counts)))] if backends else []


def _depth(managers: list[ConnectionManager]) -> Samples:
    return [((), float(sum(c.queued for m in managers for c in m)))]


def _drops(managers: list[ConnectionManager]) -> Samples:
    totals = dict.fromkeys(("drop_oldest", "drop_newest", "coalesced", "closed"), 0.0)
    for manager in managers:
        s = manager.stats()
        totals["drop_oldest"] += s.dropped_oldest
        totals["drop_newest"] += s.dropped_newest
        totals["coalesced"] += s.coalesced
        totals["closed"] += s.dropped_closed + s.discarded_on_close
    return [((reason,), value) for reason, value in totals.items()]


def _slow(managers: list[ConnectionManager]) -> Samples:
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
