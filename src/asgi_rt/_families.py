"""Metric families that cost a few list operations per observation.

``prometheus_client``'s own children take a lock and do lookups on every call, which
is most of what per-frame telemetry costs (see PERF-NOTES). These families aggregate
into plain ints and lists (one event loop thread writes them; a scrape reads them) and
turn into ``prometheus_client`` metric families only at scrape time, through one
collector. Label children are bound once, per connection, never per frame.

In prometheus multiprocess mode these in-process values would not be aggregated
across workers, so :class:`Families` builds ``prometheus_client`` metrics instead,
with the same ``labels(...).observe/inc/dec`` surface.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import prometheus_client
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

__all__ = [
    "CounterChild", "CounterFamily", "Families", "FastFamily", "GaugeChild", "GaugeFamily",
    "HistogramChild", "HistogramFamily",
]  # fmt: skip


class HistogramChild(Protocol):
    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None: ...


class CounterChild(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class GaugeChild(Protocol):
    def inc(self, amount: float = 1) -> None: ...
    def dec(self, amount: float = 1) -> None: ...


class HistogramFamily(Protocol):
    """A histogram: one child per label values, bound once (per connection), not per frame."""

    def labels(self, *values: str) -> HistogramChild: ...


class CounterFamily(Protocol):
    def labels(self, *values: str) -> CounterChild: ...


class GaugeFamily(Protocol):
    def labels(self, *values: str) -> GaugeChild: ...


class _Histogram:
    __slots__ = ("bounds", "counts", "exemplars", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.exemplars: list[Exemplar | None] | None = None

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        i = bisect_left(self.bounds, amount)
        self.counts[i] += 1
        self.sum += amount
        if exemplar is not None:
            if self.exemplars is None:
                self.exemplars = [None] * len(self.counts)
            self.exemplars[i] = Exemplar(exemplar, amount, time.time())


class _Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount


class FastFamily:
    """One in-process family; ``functions`` add samples read at scrape time."""

    def __init__(self, kind: str, name: str, doc: str, labels: Sequence[str],
                 bounds: tuple[float, ...] = ()) -> None:  # fmt: skip
        self.kind, self.name, self.doc = kind, name, doc
        self.label_names = tuple(labels)
        self.bounds = bounds
        self.children: dict[tuple[str, ...], Any] = {}
        # read at scrape time and added to the children's values with the same labels:
        # counters and gauges yield (labels, value), histograms (labels, (counts, sum))
        self.functions: list[Callable[[], Iterable[tuple[tuple[str, ...], Any]]]] = []

    def labels(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.label_names):
                raise ValueError(f"{self.name} takes labels {self.label_names}, got {values}")
            child = _Histogram(self.bounds) if self.kind == "histogram" else _Value()
            self.children[values] = child
        return child

    def collect(self) -> Metric:
        if self.kind == "histogram":
            return self._collect_histogram()
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        family = cls(self.name, self.doc, labels=self.label_names)
        totals = {values: child.value for values, child in list(self.children.items())}
        for function in self.functions:
            for values, value in function():
                totals[values] = totals.get(values, 0.0) + value
        for values, value in totals.items():
            family.add_metric(values, value)
        return family

    def _collect_histogram(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.label_names)
        les = [*(floatToGoString(b) for b in self.bounds), "+Inf"]  # type: ignore[no-untyped-call]
        totals: dict[tuple[str, ...], tuple[list[int], float, list[Exemplar | None] | None]] = {
            values: (list(child.counts), child.sum, child.exemplars)
            for values, child in list(self.children.items())
        }
        for function in self.functions:
            for values, (counts, total) in function():
                mine, sum_, exemplars = totals.get(values, ([0] * len(les), 0.0, None))
                merged = [a + b for a, b in zip(mine, counts, strict=True)]
                totals[values] = (merged, sum_ + total, exemplars)
        for values, (counts, sum_, exemplars) in totals.items():
            running, buckets = 0, []
            for le, count, exemplar in zip(
                les, counts, exemplars or [None] * len(les), strict=True
            ):
                running += count
                buckets.append((le, running, exemplar) if exemplar else (le, running))
            family.add_metric(values, buckets, sum_)
        return family


class _Collector(Collector):
    def __init__(self, families: list[FastFamily]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            yield family.collect()

    def describe(self) -> Iterator[Metric]:
        """Names for the registry's duplicate check (values are not needed)."""
        return self.collect()


class Families:
    """Builds the metric families for one registry, fast or multiprocess-safe."""

    def __init__(self, registry: CollectorRegistry, *, multiprocess: bool) -> None:
        self.registry = registry
        self.multiprocess = multiprocess
        self._fast: list[FastFamily] = []

    def histogram(
        self, name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> HistogramFamily:
        if self.multiprocess:
            metric = prometheus_client.Histogram(
                name, doc, labels, registry=self.registry, buckets=tuple(buckets)
            )
            histogram: HistogramFamily = _labelled(metric, labels)
            return histogram
        return self._add(FastFamily("histogram", name, doc, labels, tuple(buckets)))

    def counter(self, name: str, doc: str, labels: Sequence[str]) -> CounterFamily:
        if self.multiprocess:
            metric = prometheus_client.Counter(name, doc, labels, registry=self.registry)
            counter: CounterFamily = _labelled(metric, labels)
            return counter
        return self._add(FastFamily("counter", name.removesuffix("_total"), doc, labels))

    def gauge(
        self, name: str, doc: str, labels: Sequence[str], mode: str = "livesum"
    ) -> GaugeFamily:
        """A gauge; ``mode`` is how multiprocess mode combines the workers' values."""
        if self.multiprocess:
            metric = prometheus_client.Gauge(
                name, doc, labels, registry=self.registry,
                multiprocess_mode=mode,  # type: ignore[arg-type]  # it checks the value
            )  # fmt: skip
            gauge: GaugeFamily = _labelled(metric, labels)
            return gauge
        return self._add(FastFamily("gauge", name, doc, labels))

    def register(self) -> None:
        """Register the fast families (after all are made, so duplicates are caught)."""
        if self._fast:
            self.registry.register(_Collector(self._fast))

    def _add(self, family: FastFamily) -> FastFamily:
        self._fast.append(family)
        return family


class _Unlabelled:
    """A label-less ``prometheus_client`` metric with the fast families' surface:
    ``labels()`` (no values) returns the metric itself, where prometheus_client raises."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric

    def labels(self) -> Any:
        return self._metric

    def __getattr__(self, name: str) -> Any:
        return getattr(self._metric, name)


def _labelled(metric: Any, labels: Sequence[str]) -> Any:
    return metric if labels else _Unlabelled(metric)
