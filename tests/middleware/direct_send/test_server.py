"""``ConnectionManager(direct_send=True)`` behind the production middleware, on a real
uvicorn: data frames skip the middleware's ``send`` wrappers, yet what the operator and the
client see is the same (every frame on the wire once and in order, the same /metrics), and
an auth close still stops every frame at once. One difference is documented and pinned:
a ``send``-wrapping middleware of the user's own, inside asgi_rt's, sees no data frames."""

from __future__ import annotations

import json
import struct
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from asgi_rt import (
    Authenticated,
    ConnectionManager,
    FirstMessageAuthMiddleware,
    Metrics,
    TelemetryMiddleware,
)
from asgi_rt._sendseam import SendSeam, install, seam_of

from ..._rawclient import RawClient
from ..._server import RunningServer, wait_for
from ._stack import PAYLOADS, parse, running

pytestmark = pytest.mark.server


class UserCounter:
    """A user's own send-wrapping middleware (inside asgi_rt's): counts data frames."""

    def __init__(self, app: ASGIApp, tally: Counter[str]) -> None:
        self.app, self.tally = app, tally

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counting(message: Message) -> None:
            if message["type"] == "websocket.send":
                self.tally["data_frames"] += 1
            await send(message)

        await self.app(scope, receive, counting)


class Stack:
    """Telemetry > FirstMessageAuth > UserCounter > Starlette, with a ConnectionManager.

    A client sends ``go`` for one broadcast of PAYLOADS, ``more`` for the next tick of an
    increasing counter (to everyone), ``slow`` for PAYLOADS after a slow frame."""

    def __init__(
        self, *, direct: bool, expiry: float | None = None, multiprocess: bool = False,
        slow: bool = False,
    ):  # fmt: skip
        self.manager = ConnectionManager(direct_send=direct)
        self.registry = CollectorRegistry()
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.auth_stats: Counter[str] = Counter()
        manager = self.manager

        self.closes: list[tuple[int | None, str | None]] = []  # what the app was told

        async def endpoint(websocket: WebSocket) -> None:
            async with manager.connect(websocket) as conn:
                async for text in conn.iter_text():
                    if text == "slow":  # a frame whose processing outlasts the threshold
                        await anyio.sleep(0.2)
                    if text in ("go", "slow"):
                        for payload in PAYLOADS:
                            await manager.broadcast(payload)
                    elif text == "more":  # the next tick, to everyone
                        self.ticks += 1
                        await manager.broadcast(str(self.ticks))
            self.closes.append((conn.close_code, conn.close_reason))

        async def authenticate(token: str) -> Any:
            if expiry is not None:
                return Authenticated(token, time.time() + expiry)
            return token

        self.ticks = 0
        lifespan = running(manager)

        self.user_tally: Counter[str] = Counter()
        self.app = Starlette(routes=[WebSocketRoute("/ws", endpoint)], lifespan=lifespan,
                             middleware=[
            Middleware(TelemetryMiddleware,  # outermost
                       metrics=Metrics(self.registry, multiprocess=multiprocess),
                       **({"frame_sample_ratio": 0.0, "slow_frame_seconds": 0.1} if slow else {}),
                       tracer_provider=provider, loop_lag=False),
            Middleware(FirstMessageAuthMiddleware, authenticate=authenticate,
                       stats=self.auth_stats),
            Middleware(UserCounter, tally=self.user_tally),
        ])  # fmt: skip

    def metrics(self) -> dict[str, float]:
        """The outbound samples of /metrics for the route, by sample name and labels."""
        return parse(generate_latest(self.registry).decode())


def login(server: RunningServer, token: str = "ada") -> RawClient:
    client = RawClient(server.port, rcvbuf=None)
    assert client.status == 101
    client.send_text(json.dumps({"type": "auth", "token": token}))
    assert client.next_frame() == (0x1, b'{"type":"auth_ok"}')
    return client


def expected_frames() -> list[tuple[int, bytes]]:
    frames = []
    for payload in PAYLOADS:
        if isinstance(payload, bytes):
            frames.append((0x2, payload))
        elif isinstance(payload, str):
            frames.append((0x1, payload.encode()))
        else:
            frames.append((0x1, json.dumps(payload, separators=(",", ":")).encode()))
    return frames


def run_broadcast(stack: Stack, serve: Callable[..., RunningServer], ws: str) -> dict[str, float]:
    """Broadcast to three clients, close them; returns /metrics while they were open."""
    server = serve(stack.app, ws=ws, lifespan="on")
    clients = [login(server) for _ in range(3)]
    wait_for(lambda: len(stack.manager) == 3, what="three members")
    clients[0].send_text("go")
    for client in clients:  # every frame once, in order, byte for byte
        assert [client.next_frame() for _ in PAYLOADS] == expected_frames()
    # a frame's send is recorded when the server's send returns, just after the client has
    # it: wait for all 3 x (auth_ok + 5) sends, then compare
    count = 'asgi_rt_send_duration_seconds_count{route="/ws"}'
    wait_for(lambda: stack.metrics().get(count) == 3 * 6, what="every send recorded")
    while_open = stack.metrics()
    assert stack.metrics() == while_open  # a scrape changes nothing
    for client in clients:
        client.send_frame(0x8, struct.pack("!H", 1000))
        assert client.read_frames()[-1][0] == 0x8
        client.close()
    wait_for(lambda: len(stack.manager) == 0, what="all released")
    wait_for(lambda: sum(s.name == "WS /ws close" for s in stack.exporter.get_finished_spans())
             == 3, what="three close records")  # fmt: skip
    return while_open


@pytest.mark.parametrize(
    ("ws", "multiprocess"), [("websockets", False), ("wsproto", False), ("websockets", True)]
)
def test_direct_frames_reach_everyone_and_metrics_match_the_wrapped_path(
    monkeypatch: pytest.MonkeyPatch,  # before serve: the servers stop while it is set
    tmp_path: Path,
    serve: Callable[..., RunningServer],
    ws: str,
    multiprocess: bool,
) -> None:
    """In-process metrics count direct frames in bulk (read at scrape time); multiprocess
    ones frame by frame: either way /metrics is what the wrapped path shows, while the
    sockets are open and after they closed."""
    if multiprocess:  # what a worker under PROMETHEUS_MULTIPROC_DIR has
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    wrapped = Stack(direct=False, multiprocess=multiprocess)
    direct = Stack(direct=True, multiprocess=multiprocess)
    wrapped_open = run_broadcast(wrapped, serve, ws)
    direct_open = run_broadcast(direct, serve, ws)

    assert direct_open == wrapped_open
    assert direct_open['asgi_rt_messages_total{direction="out",route="/ws",type="text"}'] == 3 * 5
    assert direct.metrics() == wrapped.metrics()
    out = direct.metrics()
    # 3 clients x (auth_ok + the broadcasts): 4 text and 1 binary broadcast each
    assert out['asgi_rt_messages_total{direction="out",route="/ws",type="text"}'] == 3 * 5
    assert out['asgi_rt_messages_total{direction="out",route="/ws",type="binary"}'] == 3
    sizes = [len(f[1]) for f in expected_frames()] + [len(b'{"type":"auth_ok"}')]
    assert out['asgi_rt_message_size_bytes_sum{direction="out",route="/ws"}'] == 3 * sum(sizes)
    assert out['asgi_rt_send_duration_seconds_count{route="/ws"}'] == 3 * 6
    for stack in (wrapped, direct):  # each close record counts what its client got
        closes = [s for s in stack.exporter.get_finished_spans() if s.name == "WS /ws close"]
        assert all(s.attributes is not None for s in closes)
        assert [s.attributes["websocket.messages.sent"] for s in closes if s.attributes] == [6] * 3
        assert {s.attributes["websocket.bytes.sent"] for s in closes if s.attributes} == {
            sum(sizes)
        }
    # the trade-off the option documents: a send wrapper inside asgi_rt's sees no data frame
    assert wrapped.user_tally["data_frames"] == 3 * len(PAYLOADS)
    assert direct.user_tally["data_frames"] == 0


def read_until_close(client: RawClient) -> tuple[list[int], tuple[int, str], bytes]:
    """The ticks before the close, asking for the next after each (a stream paced by the
    client, no timer); the close (code, reason), and anything after it."""
    ticks, close = [], None
    while close is None:
        frame = client.next_frame(timeout=20)
        assert frame is not None, "the connection ended without a close frame"
        opcode, payload = frame
        if opcode == 0x8:
            close = (struct.unpack("!H", payload[:2])[0], payload[2:].decode())
        else:
            assert opcode == 0x1
            ticks.append(int(payload))
            client.send_text("more")
    client.send_frame(0x8, struct.pack("!H", close[0]))  # answer, so the server ends TCP
    after = b""
    while (frame := client.next_frame(timeout=20)) is not None:
        after += bytes([frame[0]]) + frame[1]
    assert client.eof, "the server did not end the connection after the close handshake"
    client.close()  # as a browser does (websockets' legacy close waits for it, up to 10 s)
    return ticks, close, after


@pytest.mark.parametrize("ws", ["websockets", "wsproto"])
def test_token_expiry_stops_direct_frames_before_the_close(
    serve: Callable[..., RunningServer], ws: str
) -> None:
    stack = Stack(direct=True, expiry=0.5)
    server = serve(stack.app, ws=ws, lifespan="on")
    client = login(server)
    client.send_text("more")  # ticks flow, one per "more", until the token expires
    ticks, close, after = read_until_close(client)
    assert close == (1008, "token expired")
    assert after == b""
    assert ticks and ticks == list(range(ticks[0], ticks[0] + len(ticks)))  # none skipped
    wait_for(lambda: len(stack.manager) == 0, what="the member released")
    stats = stack.manager.stats()
    assert stats.send_errors == 0, "a frame was written after auth closed the socket"
    assert stack.auth_stats == Counter(expired=1)
    assert stack.closes == [(1008, "token expired")]  # the app is told what the client was
    client.close()


def test_a_refresh_to_another_principal_stops_direct_frames(
    serve: Callable[..., RunningServer],
) -> None:
    stack = Stack(direct=True, expiry=60.0)
    server = serve(stack.app, ws="websockets", lifespan="on")
    client = login(server, "ada")
    client.send_text("more")
    assert client.next_frame() == (0x1, b"1")  # ticks are flowing to ada
    client.send_text(json.dumps({"type": "auth", "token": "grace"}))
    _ticks, close, after = read_until_close(client)
    assert close == (1008, "principal changed")
    assert after == b""
    wait_for(lambda: len(stack.manager) == 0, what="the member released")
    assert stack.manager.stats().send_errors == 0
    assert stack.closes == [(1008, "principal changed")]
    client.close()


def test_a_slow_frames_tail_span_counts_its_direct_sends(
    serve: Callable[..., RunningServer],
) -> None:
    """Tail sampling records the sends a slow frame caused on its connection, direct or not."""
    spans = {}
    for direct in (False, True):
        stack = Stack(direct=direct, slow=True)
        server = serve(stack.app, ws="websockets", lifespan="on")
        client = login(server)
        client.send_text("slow")
        assert [client.next_frame() for _ in PAYLOADS] == expected_frames()
        client.send_text("next")  # ends the slow frame's processing
        wait_for(lambda s=stack: any(sp.name == "WS /ws receive"
                                     for sp in s.exporter.get_finished_spans()),
                 what="the slow frame's tail span")  # fmt: skip
        [span] = [sp for sp in stack.exporter.get_finished_spans() if sp.name == "WS /ws receive"]
        assert span.attributes is not None
        spans[direct] = (span.attributes["asgi_rt.frame.sends"],
                         span.attributes["asgi_rt.frame.sent_bytes"])  # fmt: skip
        client.close()
    sizes = sum(len(payload) for _, payload in expected_frames())
    assert spans == {False: (len(PAYLOADS), sizes), True: (len(PAYLOADS), sizes)}


# the seam on its own: generated orders of install, subscription and revocation ----------


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["install", "on_revoke", "revoke"]), max_size=10))
def test_a_seam_tells_its_latest_subscriber_of_the_revocation_once(steps: list[str]) -> None:
    """Whoever installs first makes the scope's one seam (the server's extensions kept); a
    subscriber registered before the first revoke is told then (the latest one only: a
    connection has one sender), one registered after is told at once; nobody twice; each
    is told the first revocation's code and reason."""
    scope: dict[str, Any] = {"type": "websocket", "extensions": {"websocket.http.response": {}}}

    async def send(message: Message) -> None:
        """The server's send (never called here)."""

    told: list[tuple[int, int, str]] = []
    seams = set()
    for index, step in enumerate(steps):
        seam = install(scope, send)
        seams.add(id(seam))
        if step == "on_revoke":
            seam.on_revoke(lambda code, reason, i=index: told.append((i, code, reason)))  # type: ignore[misc]
        elif step == "revoke":
            seam.revoke(4000 + index, f"revoked at {index}")
    first_revoke = steps.index("revoke") if "revoke" in steps else len(steps)
    before = [i for i, step in enumerate(steps[:first_revoke]) if step == "on_revoke"]
    after = [i for i, step in enumerate(steps) if step == "on_revoke" and i > first_revoke]
    expected = after if not before or first_revoke == len(steps) else [before[-1], *after]
    assert [i for i, _, _ in told] == expected
    assert {(code, reason) for _, code, reason in told} <= {
        (4000 + first_revoke, f"revoked at {first_revoke}")
    }
    assert len(seams) == (1 if steps else 0)
    if steps:
        assert isinstance(seam_of(scope), SendSeam)
        assert scope["extensions"]["websocket.http.response"] == {}
