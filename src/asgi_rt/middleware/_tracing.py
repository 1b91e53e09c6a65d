"""Span helpers for the telemetry middleware: names, attributes, the frame sampler."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Tracer
from starlette.routing import Match, Mount
from starlette.types import Scope

__all__ = ["SIZE_ATTRIBUTE", "exemplar_of", "frame_sampler", "route_of", "start_frame_span"]

SIZE_ATTRIBUTE = "messaging.message.body.size"  # on frame spans and ``send`` events

AttributesHook = Callable[[Scope], Mapping[str, Any]]


def route_of(scope: Scope) -> str:
    """The route template Starlette matched (``/ws/{room}``), never the raw path.

    Read from ``scope["route"]`` once the router has run; before that (a middleware that
    accepts before routing, such as first-message auth) matched against the app's routes
    the way Starlette's router will, so the label never depends on middleware order.
    """
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    router = getattr(scope.get("app"), "router", None)
    template = _template(getattr(router, "routes", ()), scope)
    return "unknown" if template is None else template


def _template(routes: Iterable[Any], scope: Scope) -> str | None:
    """The template of the first route that fully matches ``scope`` (into mounts too)."""
    for route in routes:
        try:
            match, child = route.matches(scope)
        except Exception:  # a custom route that cannot match this scope
            continue
        if match is not Match.FULL:
            continue
        path = getattr(route, "path", "")
        if isinstance(route, Mount):
            inner = _template(route.routes, {**scope, **child})
            return None if inner is None else path + inner
        return path if isinstance(path, str) else None
    return None


def frame_sampler(ratio: float) -> Callable[[], bool]:
    """A function that decides, before the tracer is touched, whether a frame gets a span.

    Raises:
        ValueError: ``ratio`` outside [0, 1].
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"frame_sample_ratio must be within [0, 1], got {ratio!r}")
    if ratio >= 1.0:
        return _always
    if ratio <= 0.0:
        return _never
    draw = random.random

    def sample() -> bool:
        return draw() < ratio

    return sample


def _always() -> bool:
    return True


def _never() -> bool:
    return False


def start_frame_span(
    tracer: Tracer, name: str, kind: SpanKind, route: str, size: int, link: Link | None,
    parent: Context | None = None, *, start_time: int | None = None,
    extra: dict[str, str | int] | None = None,
) -> Span:  # fmt: skip
    """A frame's span; ``start_time`` (ns) backdates it, ``extra`` adds attributes (both
    for the tail-sampled spans of :mod:`._tailspans`)."""
    # The route and protocol are on the linked handshake span; every attribute here costs
    # the SDK a validation and a copy per frame.
    attributes: dict[str, str | int] = {"http.route": route, SIZE_ATTRIBUTE: size}
    if extra:
        attributes.update(extra)
    links = None if link is None else [link]
    return tracer.start_span(name, context=parent, kind=kind, attributes=attributes, links=links,
                             start_time=start_time)  # fmt: skip


def exemplar_of(span: Span | None) -> dict[str, str] | None:
    """The trace id of a recording span, as a Prometheus exemplar label set."""
    if span is None or not span.is_recording():
        return None
    return {"trace_id": format(span.get_span_context().trace_id, "032x")}
