"""FirstMessageAuthMiddleware in process, under asyncio and trio."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import Authenticated, AuthInfo, FirstMessageAuthMiddleware
from asgi_rt.testing import websocket_session

pytestmark = pytest.mark.anyio


def protected(**options: Any) -> tuple[FirstMessageAuthMiddleware, list[Any]]:
    seen: list[Any] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol=None)
        seen.append((websocket.scope["user"], websocket.scope["auth"]))
        async for text in websocket.iter_text():
            await websocket.send_text(f"echo:{text}")

    async def authenticate(token: str) -> Any:
        if token.startswith("ttl:"):
            return Authenticated("ada", time.time() + float(token[4:]))
        return {"good": "ada"}.get(token)

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    options = {"authenticate": authenticate, "timeout": 0.5, **options}
    return FirstMessageAuthMiddleware(app, **options), seen


async def test_success_sets_user_and_auth_and_absorbs_the_apps_accept() -> None:
    mw, seen = protected()
    async with websocket_session(mw, "/ws") as ws:
        await ws.send_json({"type": "auth", "token": "good"})
        assert await ws.receive_json() == {"type": "auth_ok"}
        await ws.send_text("hi")
        assert await ws.receive_text() == "echo:hi"  # no second accept reached the client
    user, info = seen[0]
    assert user == "ada"
    assert isinstance(info, AuthInfo) and info.method == "message" and info.token == "good"
    assert "good" not in repr(info)


async def test_timeout_closes_1008_and_the_app_never_runs() -> None:
    stats: Counter[str] = Counter()
    mw, seen = protected(stats=stats)
    async with websocket_session(mw, "/ws") as ws:
        assert await ws.receive_close() == 1008
        assert ws.close_reason == "auth timeout"
    assert seen == []
    assert stats == Counter(timeout=1)


async def test_wrong_type_closes_auth_malformed() -> None:
    mw, seen = protected()
    async with websocket_session(mw, "/ws") as ws:
        await ws.send_json({"type": "subscribe", "token": "good"})
        assert await ws.receive_close() == 1008
        assert ws.close_reason == "auth malformed"
    assert seen == []


async def test_expiry_closes_with_token_expired_and_ends_the_apps_receive() -> None:
    mw, seen = protected()
    async with websocket_session(mw, "/ws") as ws:
        await ws.send_json({"type": "auth", "token": "ttl:0.3"})
        assert await ws.receive_json() == {"type": "auth_ok"}
        with anyio.fail_after(5):
            assert await ws.receive_close() == 1008
        assert ws.close_reason == "token expired"
    assert len(seen) == 1


async def test_a_refresh_to_a_token_without_expiry_lifts_the_deadline() -> None:
    """The first token expires in 0.3 s; the refresh's does not expire at all. The socket
    used to be closed 'token expired' at the old deadline all the same."""
    mw, _ = protected()
    async with websocket_session(mw, "/ws") as ws:
        await ws.send_json({"type": "auth", "token": "ttl:0.3"})
        assert await ws.receive_json() == {"type": "auth_ok"}
        await ws.send_json({"type": "auth", "token": "good"})
        assert await ws.receive_json() == {"type": "auth_ok"}
        past = anyio.current_time() + 1.0  # well past the first token's expiry
        while anyio.current_time() < past:  # still answering: not closed
            await ws.send_text("ping")
            with anyio.fail_after(5):
                assert await ws.receive_text() == "echo:ping"
            await anyio.sleep(0.05)  # pacing the probes, not waiting for an outcome


async def test_refresh_with_a_bad_token_closes_auth_failed() -> None:
    mw, _ = protected()
    async with websocket_session(mw, "/ws") as ws:
        await ws.send_json({"type": "auth", "token": "ttl:30"})
        assert await ws.receive_json() == {"type": "auth_ok"}
        await ws.send_json({"type": "auth", "token": "forged"})
        assert await ws.receive_close() == 1008
        assert ws.close_reason == "auth failed"


async def test_an_app_that_denies_after_auth_closes_instead() -> None:
    async def deny(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"no"})

    async def authenticate(token: str) -> str:
        return "ada"

    mw = FirstMessageAuthMiddleware(deny, authenticate=authenticate)
    async with websocket_session(mw, "/ws") as ws:
        await ws.send_json({"type": "auth", "token": "t"})
        assert await ws.receive_json() == {"type": "auth_ok"}
        assert await ws.receive_close() == 1008


async def test_a_raising_failure_hook_does_not_change_the_outcome() -> None:
    def hook(reason: str, scope: Any) -> None:
        raise RuntimeError("hook bug")

    mw, _ = protected(on_failure=hook)
    async with websocket_session(mw, "/ws") as ws:
        await ws.send_text("garbage")
        assert await ws.receive_close() == 1008


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"authenticate": "nope"}, TypeError),
        ({"timeout": 0}, ValueError),
        ({"max_auth_size": 1}, ValueError),
        ({"query_param": "t"}, ValueError),
    ],
)
def test_bad_options_fail_at_construction(options: dict[str, Any], error: type[Exception]) -> None:
    async def authenticate(token: str) -> None:
        return None

    with pytest.raises(error):
        FirstMessageAuthMiddleware(Starlette(), **{"authenticate": authenticate, **options})


async def test_first_message_mode_keeps_the_subprotocol_the_handshake_negotiated() -> None:
    from asgi_rt import HandshakeMiddleware

    mw, seen = protected()
    guarded = HandshakeMiddleware(mw, allowed_origins=["*"], allow_missing_origin=True,
                                  subprotocols=["chat"])  # fmt: skip
    headers = [(b"sec-websocket-version", b"13")]
    async with websocket_session(guarded, "/ws", headers=headers, subprotocols=["x", "chat"]) as ws:
        assert ws.accepted is not None and ws.accepted["subprotocol"] == "chat"
        await ws.send_json({"type": "auth", "token": "good"})
        assert await ws.receive_json() == {"type": "auth_ok"}
    assert seen[0][0] == "ada"
