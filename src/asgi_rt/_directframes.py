"""Data frames a manager wrote below the middleware (``direct_send``), counted in bulk.

Per frame that completed at once the manager makes one call, :meth:`DirectTally.add`
(a few int and list updates: the connection's frames and bytes for its close record, and
its route's totals), instead of the metric calls :class:`~asgi_rt.TelemetryMiddleware`'s
send wrapper makes. The families add the route totals to their own values at scrape time,
so ``asgi_rt_messages_total{direction="out"}``, ``asgi_rt_message_size_bytes{direction="out"}``
and ``asgi_rt_send_duration_seconds`` (these sends completed at once: observed as 0 s)
stay exact at every scrape without a metric call per frame. A scrape costs one pass over
the routes (templates: a bounded set), whatever the number of connections; the totals only
grow, so a scrape from another thread never sees a counter go back.

Only for the in-process families: in prometheus multiprocess mode a scrape reads files
written by each worker, so there every direct frame is reported as it is sent.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

__all__ = ["DirectFrames", "DirectTally", "RouteTally"]

Histogram = tuple[tuple[str, ...], tuple[list[int], float]]


class RouteTally:
    """One route's direct frames: by type, bytes, and sizes in buckets. Only grows."""

    __slots__ = ("binary", "bounds", "bytes", "sizes", "text")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.text = self.binary = self.bytes = 0
        self.sizes = [0] * (len(bounds) + 1)


class DirectTally:
    """One connection's direct frames (for its close record), adding to its route's."""

    __slots__ = ("bytes", "frames", "route")

    def __init__(self, route: RouteTally) -> None:
        self.route = route
        self.frames = self.bytes = 0

    def add(self, size: int, text: bool) -> None:
        """One frame of ``size`` payload bytes was written."""
        self.frames += 1
        self.bytes += size
        route = self.route
        if text:
            route.text += 1
        else:
            route.binary += 1
        route.bytes += size
        route.sizes[bisect_left(route.bounds, size)] += 1


class DirectFrames:
    """The route totals of one :class:`~asgi_rt.Metrics`, and their scrape-time samples."""

    def __init__(self, size_bounds: tuple[float, ...], time_bounds: tuple[float, ...]) -> None:
        self._size_bounds = size_bounds
        self._time_buckets = len(time_bounds) + 1
        self._routes: dict[str, RouteTally] = {}  # route templates: a bounded set

    def open(self, route: str) -> DirectTally:
        """A new connection's tally on ``route``."""
        totals = self._routes.get(route)
        if totals is None:
            totals = self._routes[route] = RouteTally(self._size_bounds)
        return DirectTally(totals)

    def messages(self) -> Iterator[tuple[tuple[str, ...], float]]:
        """``asgi_rt_messages_total`` samples: (route, "out", type) -> frames."""
        for route, totals in list(self._routes.items()):
            yield (route, "out", "text"), totals.text
            yield (route, "out", "binary"), totals.binary

    def sizes(self) -> Iterator[Histogram]:
        """``asgi_rt_message_size_bytes`` parts: (route, "out") -> (bucket counts, sum)."""
        for route, totals in list(self._routes.items()):
            yield (route, "out"), (list(totals.sizes), float(totals.bytes))

    def durations(self) -> Iterator[Histogram]:
        """``asgi_rt_send_duration_seconds`` parts: every direct frame here took 0 s."""
        for route, totals in list(self._routes.items()):
            counts = [0] * self._time_buckets
            counts[0] = totals.text + totals.binary
            yield (route,), (counts, 0.0)
