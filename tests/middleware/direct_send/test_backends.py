"""``direct_send`` in process, under asyncio and trio: under trio (and with a client that
makes every send wait) frames go through the connection's writer task and are reported
one by one with their duration instead of the bulk tally; /metrics still matches the
wrapped path frame for frame."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import Message

from asgi_rt import ConnectionManager, Metrics, TelemetryMiddleware
from asgi_rt.testing import websocket_session

from ._stack import PAYLOADS, broadcasting, parse

pytestmark = pytest.mark.anyio


async def session(direct: bool, buffer: int) -> tuple[list[Message], dict[str, float]]:
    """One client asks for the PAYLOADS broadcast, reads them, leaves; what it got and
    the outbound /metrics once the connection is released."""
    manager = ConnectionManager(direct_send=direct)
    registry = CollectorRegistry()

    app = TelemetryMiddleware(
        Starlette(routes=[WebSocketRoute("/ws", broadcasting(manager))]),
        metrics=Metrics(registry, multiprocess=False),
        loop_lag=False,
    )
    async with manager, websocket_session(app, "/ws", buffer=buffer) as ws:
        await ws.send_text("go")
        got = [await ws.receive() for _ in PAYLOADS]
    # parse leaves out the send-duration buckets and sum: durations differ between runs
    return got, parse(generate_latest(registry).decode())


def durations_count(metrics: dict[str, float]) -> float:
    return metrics['asgi_rt_send_duration_seconds_count{route="/ws"}']


@pytest.mark.parametrize("buffer", [64, 0])  # 0: every send waits for the client to read
async def test_direct_frames_metrics_match_the_wrapped_path(buffer: int) -> None:
    wrapped_frames, wrapped = await session(direct=False, buffer=buffer)
    direct_frames, direct = await session(direct=True, buffer=buffer)
    assert direct_frames == wrapped_frames
    assert [m.get("text") or m.get("bytes") for m in direct_frames][:3] == PAYLOADS[:3]
    assert direct == wrapped
    assert durations_count(direct) == len(PAYLOADS)
    assert direct['asgi_rt_messages_total{direction="out",route="/ws",type="binary"}'] == 1
