"""asgi_rt.metrics: manager metrics, the exposition app, multiprocess mode."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import ConnectionManager, Metrics, Overflow, metrics_app
from asgi_rt.metrics import close_code_label
from asgi_rt.testing import websocket_session

from ._poll import await_for


async def scrape(app: Any, accept: str = "") -> tuple[dict[bytes, bytes], str]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "headers": [(b"accept", accept.encode())]}, None, send)
    return dict(sent[0]["headers"]), sent[1]["body"].decode()


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return metrics.registry.get_sample_value(name, labels or {})


@pytest.mark.anyio
async def test_manager_queue_metrics_are_exported() -> None:
    metrics = Metrics(CollectorRegistry())
    manager = ConnectionManager(queue_size=2, overflow=Overflow.DROP_OLDEST, metrics=metrics)
    opened = anyio.Event()

    async def endpoint(websocket: WebSocket) -> None:
        async with manager.connect(websocket, id="slow") as conn:
            opened.set()
            async for _ in conn:
                pass

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    async with websocket_session(app, "/ws", buffer=0) as slow:
        await opened.wait()
        for n in range(6):  # 1 in flight, 2 queued, 3 evicted
            await manager.broadcast(str(n))
        conn = manager.get("slow")
        assert conn is not None
        await await_for(lambda: conn.queued == 2, 5, interval=0.001)
        assert sample(metrics, "asgi_rt_queue_depth") == 2
        assert sample(metrics, "asgi_rt_messages_dropped_total", {"reason": "drop_oldest"}) >= 1
        for _ in range(3):
            await slow.receive_text()
        await await_for(lambda: (sample(metrics, "asgi_rt_queue_wait_seconds_count") or 0) >= 2, 5)
    assert sample(metrics, "asgi_rt_slow_consumer_disconnects_total") == 0


@pytest.mark.anyio
async def test_metrics_app_speaks_openmetrics_with_exemplars_when_asked() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.message_size.labels("/ws", "in").observe(100, {"trace_id": "ab" * 16})
    app = metrics_app(metrics.registry)
    for accept, expected_type, exemplar in [
        ("application/openmetrics-text; version=1.0.0", "application/openmetrics-text", True),
        ("text/plain", "text/plain", False),
    ]:
        headers, body = await scrape(app, accept)
        assert headers[b"content-type"].decode().startswith(expected_type)
        assert 'asgi_rt_message_size_bytes_bucket{direction="in",le="256.0",route="/ws"} 1' in body
        assert ('# {trace_id="' in body) is exemplar


def test_close_codes_are_bucketed_to_a_bounded_set() -> None:
    assert [close_code_label(c) for c in (1000, 1013, 3001, 4321, 2000, None)] == [
        "1000", "1013", "3xxx", "4xxx", "other", "none",
    ]  # fmt: skip


WORKER = textwrap.dedent(
    """
    import os, sys
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import mark_process_dead
    from asgi_rt.metrics import Metrics
    metrics = Metrics(CollectorRegistry())
    assert metrics.multiprocess
    metrics.messages.labels("/ws", "in", "text").inc(int(sys.argv[1]))
    metrics.connections_active.labels("/ws").inc()
    if sys.argv[2] == "exit":
        mark_process_dead(os.getpid())
    """
)


@pytest.mark.anyio
async def test_multiprocess_mode_aggregates_two_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": ""}
    for count, fate in [(3, "alive"), (4, "exit")]:
        await anyio.run_process([sys.executable, "-c", WORKER, str(count), fate], env=env)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    _, body = await scrape(metrics_app(multiprocess=True))
    assert 'asgi_rt_messages_total{direction="in",route="/ws",type="text"} 7.0' in body
    assert 'asgi_rt_connections_active{route="/ws"} 1.0' in body  # the exited worker's is gone
