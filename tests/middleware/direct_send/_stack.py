"""Probe harness: Telemetry > FirstMessageAuth > Starlette, a RoomManager, /metrics in-loop."""

from __future__ import annotations

import json
import re
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import (
    Authenticated,
    ConnectionManager,
    FirstMessageAuthMiddleware,
    Metrics,
    RoomManager,
    TelemetryMiddleware,
    metrics_app,
)

from ..._rawclient import RawClient
from ..._server import RunningServer

WANTED = re.compile(
    r"^(asgi_rt_(?:messages_total|message_size_bytes_\w+|send_duration_seconds_count))"
    r"\{(.*)\} (\S+)$"
)


# What a client's "go" broadcasts: text, non-ASCII text, binary, JSON, one large frame.
PAYLOADS: list[Any] = ["a", "é" * 10, b"\x00\x01\x02", {"k": "v" * 300}, "z" * 70_000]


def broadcasting(manager: ConnectionManager) -> Callable[[WebSocket], Awaitable[None]]:
    """A WebSocket endpoint: a member of ``manager`` that broadcasts PAYLOADS on ``go``."""

    async def endpoint(websocket: WebSocket) -> None:
        async with manager.connect(websocket) as conn:
            async for text in conn.iter_text():
                if text == "go":
                    for payload in PAYLOADS:
                        await manager.broadcast(payload)

    return endpoint


def running(manager: Any) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """A lifespan that runs ``manager`` for as long as the app runs."""

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with manager:
            yield

    return lifespan


def parse(text: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        m = WANTED.match(line)
        if m and 'direction="in"' not in m[2] and "_created" not in m[1]:
            found[f"{m[1]}{{{m[2]}}}"] = float(m[3])
    return found


class Stack:
    def __init__(self, *, direct: bool, expiry: float | None = None, **options: Any) -> None:
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry, multiprocess=False)
        self.rooms = RoomManager(direct_send=direct, metrics=self.metrics, **options)
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.auth_stats: Counter[str] = Counter()
        rooms = self.rooms

        async def endpoint(websocket: WebSocket) -> None:
            room = websocket.path_params["room"]
            async with rooms.connect(websocket) as conn:
                await rooms.join(conn, room)
                async for text in conn.iter_text():
                    if text.startswith("burst:"):
                        _, n, size = text.split(":")
                        for _i in range(int(n)):  # paced by the publisher's own reader
                            await rooms.publish(room, "x" * int(size))
                            await conn.wait_flushed()
                    elif text == "leave":
                        await rooms.leave(conn, room)
                    elif text == "close":
                        await conn.close(1000, "bye")
                    else:
                        await rooms.publish(room, text)

        async def authenticate(token: str) -> Any:
            name, _, ttl = token.partition(":")
            if ttl:
                return Authenticated(name, time.time() + float(ttl))
            if expiry is not None:
                return Authenticated(name, time.time() + expiry)
            return name

        lifespan = running(rooms)

        self.app = Starlette(
            routes=[
                WebSocketRoute("/ws/{room}", endpoint),
                Route("/metrics", metrics_app(self.registry, multiprocess=False)),
            ],
            lifespan=lifespan,
            middleware=[
                Middleware(
                    TelemetryMiddleware,
                    metrics=self.metrics,
                    tracer_provider=provider,
                    loop_lag=False,
                ),
                Middleware(
                    FirstMessageAuthMiddleware, authenticate=authenticate, stats=self.auth_stats
                ),
            ],
        )

    def queued(self) -> int:
        """Frames waiting behind a pending send, over every member (a burst in progress)."""
        return sum(conn.queued for conn in self.rooms)

    def out_metrics(self) -> dict[str, float]:
        return parse(generate_latest(self.registry).decode())

    def close_records(self) -> list[dict[str, Any]]:
        return [
            dict(s.attributes or {})
            for s in self.exporter.get_finished_spans()
            if s.name.endswith(" close")
        ]


def login(
    server: RunningServer, room: str = "r", token: str = "ada", rcvbuf: int | None = None
) -> RawClient:
    client = RawClient(server.port, f"/ws/{room}", rcvbuf=rcvbuf)
    assert client.status == 101
    client.send_text(json.dumps({"type": "auth", "token": token}))
    assert client.next_frame() == (0x1, b'{"type":"auth_ok"}')
    return client


def read_all(client: RawClient, timeout: float = 20) -> tuple[list[tuple[int, bytes]], Any, bytes]:
    """Data frames until the close frame, the close (code, reason), anything after it."""
    frames, close = [], None
    while close is None:
        frame = client.next_frame(timeout=timeout)
        if frame is None:
            return frames, None, b""
        if frame[0] == 0x8:
            payload = frame[1]
            close = (
                (struct.unpack("!H", payload[:2])[0], payload[2:].decode())
                if payload
                else (1005, "")
            )
        else:
            frames.append(frame)
    with suppress(OSError):
        client.send_frame(0x8, struct.pack("!H", close[0]))
    after = b""
    while (frame := client.next_frame(timeout=5)) is not None:
        after += bytes([frame[0]]) + frame[1]
    return frames, close, after
