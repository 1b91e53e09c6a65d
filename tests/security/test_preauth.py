"""Attacks on what an unauthenticated peer costs: compressed bombs, piles of silent sockets."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from starlette.types import Receive, Scope, Send

from asgi_rt import FirstMessageAuthMiddleware, HandshakeMiddleware

from .._rawclient import RawClient
from .._server import RunningServer, wait_for

pytestmark = pytest.mark.server

DEFLATE = ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")


async def _echo_user(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] != "websocket.disconnect":
        await send({"type": "websocket.send", "text": f"{scope['user']}:{message['text']}"})


async def _authenticate(token: str) -> str | None:
    return "alice" if token == "alice-token" else None


def _stack(**handshake: object) -> HandshakeMiddleware:
    auth = FirstMessageAuthMiddleware(_echo_user, authenticate=_authenticate, timeout=10.0,
                                      max_pending=2)  # fmt: skip
    return HandshakeMiddleware(auth, allowed_origins=["*"], allow_missing_origin=True,
                               **handshake)  # type: ignore[arg-type]  # fmt: skip


def _login(raw_client: RawClient) -> str:
    """Authenticate, send "hi" and return the app's answer."""
    raw_client.send_text(json.dumps({"type": "auth", "token": "alice-token"}))
    raw_client.send_text("hi")
    frames: list[tuple[int, bytes]] = []
    wait_for(lambda: bool(frames.extend(raw_client.read_frames(timeout=0.1)))
             or len(frames) >= 2 or raw_client.eof, what="the answer")  # fmt: skip
    return frames[-1][1].decode()


def test_a_deflate_offer_is_refused_on_the_routes_that_say_so(
    serve: Callable[..., RunningServer], raw: Callable[..., RawClient]
) -> None:
    server = serve(_stack(refuse_deflate=["/ws"]), ws_per_message_deflate=True)
    bomb = raw(server.port, "/ws", headers=[DEFLATE])
    assert (bomb.status, bomb.body()) == (400, b"permessage-deflate not accepted here: offer "
                                                b"no extensions")  # fmt: skip
    plain = raw(server.port, "/ws")
    assert plain.status == 101 and _login(plain) == "alice:hi"
    other_route = raw(server.port, "/public", headers=[DEFLATE])
    assert other_route.status == 101


def test_silent_sockets_beyond_the_pre_auth_budget_are_refused_503(
    serve: Callable[..., RunningServer], raw: Callable[..., RawClient]
) -> None:
    server = serve(_stack())
    silent = [raw(server.port, "/ws") for _ in range(2)]
    assert [s.status for s in silent] == [101, 101]
    refused = raw(server.port, "/ws")
    assert (refused.status, refused.body()) == (503, b"too many unauthenticated connections")
    silent[0].reset()
    honest: list[RawClient] = []
    wait_for(lambda: honest.append(raw(server.port, "/ws")) or honest[-1].status == 101,
             what="a pre-auth slot freed")  # fmt: skip
    assert _login(honest[-1]) == "alice:hi"
