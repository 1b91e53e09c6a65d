"""HandshakeMiddleware in process (asyncio and trio): what uvicorn never lets through."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import HandshakeMiddleware
from asgi_rt.middleware._origin import parse_origin, parse_pattern
from asgi_rt.testing import WebSocketRejected, websocket_session

pytestmark = pytest.mark.anyio


def guarded(**options: Any) -> tuple[HandshakeMiddleware, list[str]]:
    calls: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        calls.append("app")
        await websocket.accept()
        await websocket.send_text(str(websocket.scope.get("subprotocols")))

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    options = {"allowed_origins": ["https://app.example.com"], **options}
    return HandshakeMiddleware(app, **options), calls


V13 = (b"sec-websocket-version", b"13")
GOOD = (b"origin", b"https://app.example.com")


async def test_wrong_version_is_426_with_the_supported_version() -> None:
    app, calls = guarded()
    with pytest.raises(WebSocketRejected) as info:
        async with websocket_session(app, "/ws", headers=[(b"sec-websocket-version", b"8"), GOOD]):
            pass
    assert info.value.status == 426
    assert info.value.headers["sec-websocket-version"] == "13"
    assert calls == []


async def test_accepted_handshake_runs_the_app_with_the_negotiated_subprotocol() -> None:
    app, calls = guarded(subprotocols=["v2", "v1"])
    async with websocket_session(app, "/ws", headers=[V13, GOOD], subprotocols=["v1", "v2"]) as ws:
        assert ws.accepted is not None and ws.accepted["subprotocol"] == "v1"
        await ws.receive_text()
    assert calls == ["app"]


async def test_without_the_http_response_extension_a_refusal_is_a_close() -> None:
    app, calls = guarded()

    async def no_extension(scope: Any, receive: Any, send: Any) -> None:
        await app({**scope, "extensions": {}}, receive, send)

    with pytest.raises(WebSocketRejected) as info:
        async with websocket_session(no_extension, "/ws", headers=[V13, (b"origin", b"x")]):
            pass
    assert info.value.status == 403
    assert calls == []


async def test_a_raising_on_reject_hook_does_not_stop_the_refusal() -> None:
    def hook(reason: str, scope: Any) -> None:
        raise RuntimeError("hook bug")

    stats: Counter[str] = Counter()
    app, _ = guarded(on_reject=hook, stats=stats)
    with pytest.raises(WebSocketRejected) as info:
        async with websocket_session(app, "/ws", headers=[V13]):
            pass
    assert info.value.status == 403
    assert stats == Counter(origin=1)


async def test_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    await HandshakeMiddleware(app, allowed_origins=[])({"type": "http"}, None, None)  # type: ignore[arg-type]
    assert seen == ["http"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_parse_origin_never_raises(value: str) -> None:
    parse_origin(value)
    parse_origin("https://" + value)


@pytest.mark.parametrize(
    "pattern",
    ["https://*", "*.example.com", "https://a.com/", "https://*.com", "foo", "https://a:x"],
)
def test_malformed_patterns_fail_at_construction(pattern: str) -> None:
    with pytest.raises(ValueError, match="origin pattern"):
        parse_pattern(pattern)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"allowed_origins": "https://a.com"}, TypeError),
        ({"allowed_origins": [], "max_connections": 0}, ValueError),
        ({"allowed_origins": [], "max_connections_per_client": 0}, ValueError),
        ({"allowed_origins": [], "require_subprotocol": True}, ValueError),
        ({"allowed_origins": [], "trusted_hops": 0}, ValueError),
    ],
)
def test_bad_options_fail_at_construction(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        HandshakeMiddleware(Starlette(), **options)
