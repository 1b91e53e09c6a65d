"""Data frames a manager wrote below the middleware (``direct_send``), counted in bulk.

Per frame that completed at once the manager makes one call, :meth:`DirectTally.add`
(a few int and list updates on that connection's tally), instead of the metric calls
:class:`~asgi_rt.TelemetryMiddleware`'s send wrapper makes. The families read the
tallies at scrape time: live connections' tallies by route, plus the totals of the
connections that ended (folded in by :meth:`DirectFrames.close`). So
``asgi_rt_messages_total{direction="out"}``, ``asgi_rt_message_size_bytes{direction="out"}``
and ``asgi_rt_send_duration_seconds`` (these sends completed at once: observed as 0 s)
stay exact at every scrape without a metric call per frame.

Only for the in-process families: in prometheus multiprocess mode a scrape reads files
written by each worker, so there every direct frame is reported as it is sent.
Written by the event loop only; a scrape from another thread (prometheus_client's
``start_http_server``) may see a connection that is ending counted twice or not at all
for that instant.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

__all__ = ["DirectFrames", "DirectTally"]

Histogram = tuple[tuple[str, ...], tuple[list[int], float]]


class DirectTally:
    """One connection's direct data frames: by type, bytes, and sizes in buckets."""

    __slots__ = ("binary", "bounds", "bytes", "sizes", "text")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.text = self.binary = self.bytes = 0
        self.sizes = [0] * (len(bounds) + 1)

    def add(self, size: int, text: bool) -> None:
        """One frame of ``size`` payload bytes was written."""
        if text:
            self.text += 1
        else:
            self.binary += 1
        self.bytes += size
        self.sizes[bisect_left(self.bounds, size)] += 1

    @property
    def frames(self) -> int:
        return self.text + self.binary

    def merge(self, other: DirectTally) -> None:
        self.text += other.text
        self.binary += other.binary
        self.bytes += other.bytes
        self.sizes = [a + b for a, b in zip(self.sizes, other.sizes, strict=True)]


class DirectFrames:
    """Every connection's tally by route: live ones read at scrape, ended ones summed.

    Holds one tally per open connection and one per route that had a connection end
    (routes are templates, a bounded set)."""

    def __init__(self, size_bounds: tuple[float, ...], time_bounds: tuple[float, ...]) -> None:
        self._size_bounds = size_bounds
        self._time_buckets = len(time_bounds) + 1
        self._live: dict[DirectTally, str] = {}
        self._ended: dict[str, DirectTally] = {}

    def open(self, route: str) -> DirectTally:
        tally = DirectTally(self._size_bounds)
        self._live[tally] = route
        return tally

    def close(self, tally: DirectTally) -> None:
        """The connection ended: fold its tally into its route's totals."""
        route = self._live.pop(tally, None)
        if route is None:
            return
        ended = self._ended.get(route)
        if ended is None:
            ended = self._ended[route] = DirectTally(self._size_bounds)
        ended.merge(tally)

    def _by_route(self) -> dict[str, DirectTally]:
        totals: dict[str, DirectTally] = {}
        for route, tally in [*self._ended.items(), *((r, t) for t, r in list(self._live.items()))]:
            total = totals.get(route)
            if total is None:
                total = totals[route] = DirectTally(self._size_bounds)
            total.merge(tally)
        return totals

    def messages(self) -> Iterator[tuple[tuple[str, ...], float]]:
        """``asgi_rt_messages_total`` samples: (route, "out", type) -> frames."""
        for route, total in self._by_route().items():
            yield (route, "out", "text"), total.text
            yield (route, "out", "binary"), total.binary

    def sizes(self) -> Iterator[Histogram]:
        """``asgi_rt_message_size_bytes`` parts: (route, "out") -> (bucket counts, sum)."""
        for route, total in self._by_route().items():
            yield (route, "out"), (total.sizes, float(total.bytes))

    def durations(self) -> Iterator[Histogram]:
        """``asgi_rt_send_duration_seconds`` parts: every direct frame here took 0 s."""
        for route, total in self._by_route().items():
            counts = [0] * self._time_buckets
            counts[0] = total.frames
            yield (route,), (counts, 0.0)
