"""Prometheus metrics for asgi_rt, and an ASGI app that exposes them.

Every metric is prefixed ``asgi_rt_``; ``route`` is the route template, never the raw
path; every label takes values from a bounded set. Time buckets start at 50 µs and
size buckets at 64 B. One :class:`Metrics` per registry: share it between the
middlewares and managers of an app (``TelemetryMiddleware(app, metrics=metrics)``).
"""

from __future__ import annotations

import weakref
from functools import partial
from typing import TYPE_CHECKING

import anyio
from prometheus_client import REGISTRY, CollectorRegistry
from starlette.types import Scope

from ._directframes import DirectFrames, DirectTally
from ._exposition import MetricsApp, metrics_app, multiprocess_enabled
from ._families import CounterFamily, Families, FastFamily, GaugeFamily, HistogramFamily
from ._samples import (
    Read,
    Samples,
    depth,
    drops,
    heartbeat_closes,
    listener_up,
    reconnects,
    rooms,
    slow,
)

if TYPE_CHECKING:
    from .connections.manager import ConnectionManager

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
        self.multiprocess = multiprocess_enabled() if multiprocess is None else multiprocess
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
        # ConnectionManager(direct_send=True) frames, counted in bulk (in-process only)
        self._direct: DirectFrames | None = None
        if not self.multiprocess:
            self._direct = direct = DirectFrames(SIZE_BUCKETS, TIME_BUCKETS)
            for family, read in (
                (self.messages, direct.messages), (self.message_size, direct.sizes),
                (self.send_duration, direct.durations),
            ):  # fmt: skip
                if isinstance(family, FastFamily):  # always, outside multiprocess mode
                    family.functions.append(read)
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

    def direct_tally(self, route: str) -> DirectTally | None:
        """A new connection's tally of ``direct_send`` frames on ``route``, added to
        ``messages_total``, ``message_size_bytes`` and ``send_duration_seconds`` at scrape
        time (``TelemetryMiddleware`` opens one per connection); ``None`` in multiprocess
        mode, where each frame is reported as it is sent."""
        return None if self._direct is None else self._direct.open(route)

    def _exported(self) -> list[tuple[CounterFamily | GaugeFamily, Read]]:
        """Each family read from managers' stats, and the function that reads it."""
        return [
            (self.queue_depth, depth), (self.messages_dropped, drops),
            (self.slow_consumer_disconnects, slow), (self.rooms_active, rooms),
            (self.backplane_listener_up, listener_up),
            (self.backplane_reconnects, reconnects), (self.heartbeat_closes, heartbeat_closes),
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
