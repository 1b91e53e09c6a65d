"""The few statistics the benchmarks compute, and how their tables show them.

NaN stands for "not measured" throughout: ``med`` skips it, ``ratio`` and ``fmt`` pass it
on as NaN and ``"n/a"``.
"""

from __future__ import annotations

import math
import statistics

NAN = float("nan")


def percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted ns values, in ms."""
    if not sorted_ns:
        return math.nan
    return sorted_ns[max(1, math.ceil(q * len(sorted_ns))) - 1] / 1e6


def med(values: list[float]) -> float:
    clean = [v for v in values if v == v]  # drop NaN
    return statistics.median(clean) if clean else NAN


def ratio(a: float, b: float) -> float:
    return a / b if b and a == a and b == b else NAN


def fmt(x: float, spec: str = ".2f") -> str:
    return "n/a" if x != x else format(x, spec)


def spread(values: list[float], spec: str = ".2f") -> str:
    """``" (min-max)"`` of the values that are not NaN, or ``""`` for fewer than two."""
    clean = [v for v in values if v == v]
    if len(clean) < 2:
        return ""
    return f" ({format(min(clean), spec)}-{format(max(clean), spec)})"
