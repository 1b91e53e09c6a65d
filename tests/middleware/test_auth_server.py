"""FirstMessageAuthMiddleware on a real uvicorn with real websockets clients."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import Authenticated, FirstMessageAuthMiddleware, HandshakeMiddleware

from .._rawclient import RawClient, close_code
from .._server import RunningServer, await_for
from .._system import close_of, raise_open_files

pytestmark = [pytest.mark.anyio, pytest.mark.server]

# short-token and fresh-token are two tokens of one principal (a refresh)
TOKENS = {"good-token": "ada", "other-token": "grace", "short-token": "lin", "fresh-token": "lin"}
DEEP = "[" * 1500 + "]" * 1500  # under max_auth_size, far deeper than any decoder allows


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["websockets", "wsproto"])
def ws_impl(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class AuthApp:
    """The protected app: echoes "<user>:<frame>" and counts its invocations."""

    def __init__(self, **options: Any) -> None:
        self.invocations = 0
        self.stats: Counter[str] = Counter()
        self.expiry: dict[str, float] = {}

        async def endpoint(websocket: WebSocket) -> None:
            self.invocations += 1
            await websocket.accept()
            async for text in websocket.iter_text():
                await websocket.send_text(f"{websocket.scope['user']}:{text}")

        async def authenticate(token: str) -> Any:
            if token == "explode-secret-123":
                raise RuntimeError(f"backend down while checking {token}")
            if token in self.expiry:
                return Authenticated(TOKENS.get(token, token), time.time() + self.expiry[token])
            return TOKENS.get(token)

        inner = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
        options = {"authenticate": authenticate, "timeout": 1.0, "stats": self.stats, **options}
        self.app = FirstMessageAuthMiddleware(inner, **options)


async def _login(ws: websockets.ClientConnection, token: str) -> None:
    await ws.send(json.dumps({"type": "auth", "token": token}))
    assert json.loads(await ws.recv()) == {"type": "auth_ok"}


async def test_success_runs_the_app_with_the_principal(
    serve: Callable[..., RunningServer], ws_impl: str
) -> None:
    auth = AuthApp()
    server = serve(auth.app, ws=ws_impl)
    async with websockets.connect(f"{server.url}/ws") as ws:
        await _login(ws, "good-token")
        await ws.send("hello")
        assert await ws.recv() == "ada:hello"
    assert auth.invocations == 1


BAD_FIRST_FRAMES: list[tuple[str | bytes, int, str, str]] = [
    (b"\x01\x02", 1008, "auth malformed", "malformed"),
    ("not json", 1008, "auth malformed", "malformed"),
    ('["auth", "good-token"]', 1008, "auth malformed", "malformed"),
    ('{"type": "hello", "token": "good-token"}', 1008, "auth malformed", "malformed"),
    ('{"type": "auth"}', 1008, "auth malformed", "malformed"),
    ('{"type": "auth", "token": ""}', 1008, "auth malformed", "malformed"),
    ('{"type": "auth", "token": 42}', 1008, "auth malformed", "malformed"),
    ('{"type": "auth", "token": "wrong"}', 1008, "auth failed", "failed"),
    ('{"type": "auth", "token": "explode-secret-123"}', 1008, "auth failed", "failed"),
    (json.dumps({"type": "auth", "token": "x" * 5000}), 1009, "auth frame too big", "too_big"),
    ('{"type": "auth", "token": "good-token", "x": ' + DEEP + "}", 1008, "auth malformed",
     "malformed"),
    ('{"type": "auth", "token": "good-token", "x": NaN}', 1008, "auth malformed", "malformed"),
    ('{"type": "auth", "token": "good-token\\ud800"}', 1008, "auth malformed", "malformed"),
]  # fmt: skip


@pytest.mark.parametrize(("frame", "code", "reason", "counted"), BAD_FIRST_FRAMES)
async def test_bad_first_frames_close_and_the_app_never_runs(
    serve: Callable[..., RunningServer],
    ws_impl: str,
    frame: str | bytes,
    code: int,
    reason: str,
    counted: str,
) -> None:
    auth = AuthApp()
    server = serve(auth.app, ws=ws_impl)
    async with websockets.connect(f"{server.url}/ws") as ws:
        await ws.send(frame)
        assert await close_of(ws) == (code, reason)
    assert auth.invocations == 0
    assert auth.stats == Counter({counted: 1})


async def test_authenticate_raising_is_logged_without_the_token_and_others_carry_on(
    serve: Callable[..., RunningServer], ws_impl: str, caplog: pytest.LogCaptureFixture
) -> None:
    auth = AuthApp()
    server = serve(auth.app, ws=ws_impl)
    async with (
        websockets.connect(f"{server.url}/ws") as broken,
        websockets.connect(f"{server.url}/ws") as fine,
    ):
        await _login(fine, "good-token")
        with caplog.at_level(logging.ERROR, logger="asgi_rt.auth"):
            await broken.send(json.dumps({"type": "auth", "token": "explode-secret-123"}))
            assert await close_of(broken) == (1008, "auth failed")
        await fine.send("still here")
        assert await fine.recv() == "ada:still here"
    assert any("authenticate raised" in r.getMessage() for r in caplog.records)
    assert "backend down while checking ***" in caplog.text
    assert "explode-secret-123" not in caplog.text


async def test_timeout_closes_at_the_timeout_and_not_before(
    serve: Callable[..., RunningServer],
    ws_impl: str,
) -> None:
    auth = AuthApp(timeout=0.5)
    server = serve(auth.app, ws=ws_impl)
    async with websockets.connect(f"{server.url}/ws") as ws:
        started = time.monotonic()
        assert await close_of(ws) == (1008, "auth timeout")
        elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 2.0, elapsed  # generous upper bound: shared 2-core machines
    assert auth.stats == Counter(timeout=1)


async def test_client_leaving_mid_auth_is_cleaned_up_quietly(
    serve: Callable[..., RunningServer],
    ws_impl: str,
) -> None:
    auth = AuthApp()
    server = serve(auth.app, ws=ws_impl)
    ws = await websockets.connect(f"{server.url}/ws")
    await ws.close()
    await await_for(lambda: auth.stats["disconnect"] == 1)
    assert auth.invocations == 0


async def test_refresh_before_expiry_keeps_the_connection_then_expiry_closes_1008(
    serve: Callable[..., RunningServer],
    ws_impl: str,
) -> None:
    auth = AuthApp()
    auth.expiry = {"short-token": 0.6, "fresh-token": 1.2}
    server = serve(auth.app, ws=ws_impl)
    async with websockets.connect(f"{server.url}/ws") as ws:
        first_expiry = time.monotonic() + 0.6
        await _login(ws, "short-token")
        await _login(ws, "fresh-token")  # refresh without reconnecting, before 0.6 s
        while time.monotonic() < first_expiry + 0.2:  # past the first expiry, answered all along
            await ws.send("alive")
            assert await asyncio.wait_for(ws.recv(), 5) == "lin:alive"
            await asyncio.sleep(0.05)  # probe interval, bounded by the loop's deadline
        assert await close_of(ws) == (1008, "token expired")
    assert auth.stats == Counter(expired=1)
    assert auth.invocations == 1


async def test_a_deep_frame_that_looks_like_a_refresh_is_left_to_the_app(
    serve: Callable[..., RunningServer],
) -> None:
    auth = AuthApp()
    auth.expiry = {"long-token": 60.0}
    server = serve(auth.app)
    async with websockets.connect(f"{server.url}/ws") as ws:
        await _login(ws, "long-token")
        hostile = '{"type": "auth", "x": ' + DEEP + "}"
        await ws.send(hostile)
        assert await ws.recv() == f"long-token:{hostile}"
        await ws.send("alive")
        assert await ws.recv() == "long-token:alive"
    assert auth.stats == Counter()


async def test_handshake_tokens_header_cookie_and_subprotocol(
    serve: Callable[..., RunningServer],
    ws_impl: str,
) -> None:
    auth = AuthApp(header=True, cookie="session", subprotocol_prefix="bearer.")
    guarded = HandshakeMiddleware(auth.app, allowed_origins=["*"], allow_missing_origin=True,
                                  subprotocols=["chat"])  # fmt: skip
    server = serve(guarded, ws=ws_impl)
    url = f"{server.url}/ws"
    async with websockets.connect(
        url, additional_headers={"Authorization": "Bearer good-token"}
    ) as ws:
        await ws.send("h")
        assert await ws.recv() == "ada:h"
    async with websockets.connect(
        url, additional_headers={"Cookie": "a=b; session=other-token"}
    ) as ws:
        await ws.send("c")
        assert await ws.recv() == "grace:c"
    async with websockets.connect(url, subprotocols=["bearer.good-token", "chat"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat"  # the bearer entry is never echoed back
        await ws.send("s")
        assert await ws.recv() == "ada:s"
    refused = RawClient(server.port, "/ws", headers={"Authorization": "Bearer wrong"})
    refused.close()
    assert refused.status == 401
    assert auth.invocations == 3


async def test_query_tokens_need_an_explicit_opt_in() -> None:
    with pytest.raises(ValueError, match="access logs"):
        FirstMessageAuthMiddleware(Starlette(), authenticate=_never, query_param="token")


async def _never(token: str) -> None:
    return None


async def test_five_hundred_silent_connections_are_all_released(
    serve: Callable[..., RunningServer],
    ws_impl: str,
) -> None:
    raise_open_files(4096)
    auth = AuthApp(timeout=0.5)
    guarded = HandshakeMiddleware(auth.app, allowed_origins=["*"], allow_missing_origin=True)
    server = serve(guarded, ws=ws_impl, backlog=1024)
    clients = [RawClient(server.port, "/ws", rcvbuf=None) for _ in range(500)]
    try:
        codes = [close_code(c.read_frames(timeout=10)) for c in clients]
    finally:
        for client in clients:
            client.close()
    assert codes == [1008] * 500
    assert auth.stats == Counter(timeout=500)
    await await_for(lambda: guarded.limiter.open == 0, what="every slot released")
    assert auth.invocations == 0
