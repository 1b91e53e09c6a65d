"""Prometheus exposition as an ASGI app, multiprocess-aware."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["MetricsApp", "metrics_app", "multiprocess_enabled"]


def multiprocess_enabled() -> bool:
    # prometheus_client switches itself to multiprocess values on this variable; we follow it
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


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
    return MetricsApp(chosen, multiprocess_enabled() if multiprocess is None else multiprocess)
