"""direct_send=True under unusual stacks must behave like direct_send=False."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_rt import (
    ConnectionManager,
    FirstMessageAuthMiddleware,
    HandshakeMiddleware,
    Metrics,
    TelemetryMiddleware,
)
from asgi_rt.sse import EventStreamResponse

from ..._rawclient import RawClient
from ..._server import RunningServer, wait_for
from ._stack import PAYLOADS, broadcasting, parse

pytestmark = pytest.mark.server


def expected() -> list[tuple[int, bytes]]:
    out = []
    for p in PAYLOADS:
        if isinstance(p, bytes):
            out.append((0x2, p))
        elif isinstance(p, str):
            out.append((0x1, p.encode()))
        else:
            out.append((0x1, json.dumps(p, separators=(",", ":")).encode()))
    return out


class Outer:
    """A user's send wrapper OUTSIDE asgi_rt's middleware: must see every data frame."""

    def __init__(self, app: ASGIApp, tally: Counter[str]) -> None:
        self.app, self.tally = app, tally

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counting(message: Message) -> None:
            if message["type"] == "websocket.send":
                self.tally["frames"] += 1
            await send(message)

        await self.app(scope, receive, counting)


class PassThrough(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Any) -> Any:
        return await call_next(request)


def build(kind: str, direct: bool) -> tuple[Starlette, ConnectionManager, dict[str, Any]]:
    manager = ConnectionManager(direct_send=direct)
    info: dict[str, Any] = {"tally": Counter(), "registries": []}

    endpoint = broadcasting(manager)

    async def events(request: Request) -> Any:
        return EventStreamResponse(manager, heartbeat=None)

    def telemetry() -> Middleware:
        reg = CollectorRegistry()
        info["registries"].append(reg)
        return Middleware(
            TelemetryMiddleware, metrics=Metrics(reg, multiprocess=False), loop_lag=False
        )

    async def authenticate(token: str) -> Any:
        return token

    mws: list[Middleware] = {
        "none": lambda: [],
        "handshake": lambda: [Middleware(HandshakeMiddleware, allowed_origins=["http://x"])],
        "outer_foreign": lambda: [Middleware(Outer, tally=info["tally"]), telemetry()],
        "two_telemetry": lambda: [telemetry(), telemetry()],
        "basehttp_gzip": lambda: [Middleware(PassThrough), Middleware(GZipMiddleware), telemetry()],
        "auth_outermost": lambda: [
            Middleware(FirstMessageAuthMiddleware, authenticate=authenticate),
            telemetry(),
        ],
        "sse": lambda: [telemetry()],
    }[kind]()

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with manager:
            yield

    app = Starlette(
        routes=[WebSocketRoute("/ws", endpoint), Route("/events", events)],
        middleware=mws,
        lifespan=lifespan,
    )
    return app, manager, info


def run(kind: str, direct: bool, serve: Callable[..., RunningServer]) -> dict[str, Any]:
    app, manager, info = build(kind, direct)
    server = serve(app, ws="websockets-sansio", lifespan="on")
    sse_lines: list[str] = []
    sse_done = threading.Event()
    if kind == "sse":

        def reader() -> None:
            with (
                httpx.Client() as http,
                http.stream("GET", f"http://127.0.0.1:{server.port}/events") as resp,
            ):
                for line in resp.iter_lines():
                    if line.startswith("data:"):
                        sse_lines.append(line)
                        if len(sse_lines) == len(PAYLOADS):
                            break
            sse_done.set()

        threading.Thread(target=reader, daemon=True).start()
        wait_for(lambda: len(manager) == 1, what="sse member")
    clients = [
        RawClient(server.port, rcvbuf=None, headers={"Origin": "http://x"}) for _ in range(2)
    ]
    for c in clients:
        assert c.status == 101
        if kind == "auth_outermost":
            c.send_text(json.dumps({"type": "auth", "token": "ada"}))
            assert c.next_frame() == (0x1, b'{"type":"auth_ok"}')
    wait_for(lambda: len(manager) == 2 + (kind == "sse"), what="members")
    clients[0].send_text("go")
    for c in clients:
        assert [c.next_frame() for _ in PAYLOADS] == expected()
    if kind == "sse":
        assert sse_done.wait(10)
    for c in clients:
        c.send_frame(0x8, b"\x03\xe8")
        c.read_frames()
        c.close()
    wait_for(lambda: len(manager) == 0, what="released", timeout=10) if kind != "sse" else None
    info["metrics"] = [parse(generate_latest(r).decode()) for r in info["registries"]]
    info["stats"] = manager.stats()
    return info


@pytest.mark.parametrize(
    "kind",
    [
        "none",
        "handshake",
        "outer_foreign",
        "two_telemetry",
        "basehttp_gzip",
        "auth_outermost",
        "sse",
    ],
)
def test_direct_send_like_wrapped(serve: Callable[..., RunningServer], kind: str) -> None:
    wrapped = run(kind, False, serve)
    direct = run(kind, True, serve)
    assert direct["tally"] == wrapped["tally"]
    assert direct["metrics"] == wrapped["metrics"]
    assert direct["stats"].send_errors == wrapped["stats"].send_errors == 0
