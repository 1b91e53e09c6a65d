"""A refused handshake is logged once per reason, with what was refused, never a token."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import HandshakeMiddleware
from asgi_rt.middleware._refusals import RefusalLog
from asgi_rt.testing import WebSocketRejected, websocket_session

pytestmark = pytest.mark.anyio

V13 = (b"sec-websocket-version", b"13")
EVIL = (b"origin", b"http://127.0.0.1:8100")


def guarded(**options: Any) -> HandshakeMiddleware:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    return HandshakeMiddleware(app, allowed_origins=["http://127.0.0.1:8000"], **options)


async def refuse(app: HandshakeMiddleware, path: str, *headers: tuple[bytes, bytes]) -> None:
    with pytest.raises(WebSocketRejected):
        async with websocket_session(app, path, headers=[*headers]):
            pass


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "asgi_rt.handshake"]


async def test_a_burst_of_refusals_is_one_line_with_reason_and_origin_without_the_query(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = guarded()
    with caplog.at_level(logging.WARNING, "asgi_rt.handshake"):
        for _ in range(5):
            await refuse(app, "/ws?token=s3cret", V13, EVIL)
    [line] = refusal_lines(caplog)
    assert "403" in line and "origin not allowed" in line, line
    assert "'http://127.0.0.1:8100'" in line and "'/ws'" in line, line
    assert "s3cret" not in line and "token" not in line


async def test_each_reason_gets_its_own_line(caplog: pytest.LogCaptureFixture) -> None:
    app = guarded()
    with caplog.at_level(logging.WARNING, "asgi_rt.handshake"):
        await refuse(app, "/ws", V13, EVIL)
        await refuse(app, "/ws", (b"sec-websocket-version", b"8"), EVIL)
    lines = refusal_lines(caplog)
    assert len(lines) == 2 and "(origin:" in lines[0] and "(version:" in lines[1], lines


def test_the_next_line_counts_the_refusals_that_were_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = RefusalLog(60.0, clock=lambda: now[0])
    scope = {"type": "websocket", "path": "/ws", "headers": [EVIL]}
    with caplog.at_level(logging.WARNING, "asgi_rt.handshake"):
        for _ in range(4):
            log.refused("origin", 403, "origin not allowed", scope)
        now[0] = 61.0
        log.refused("origin", 403, "origin not allowed", scope)
    first, second = refusal_lines(caplog)
    assert "more refused" not in first
    assert second.endswith("; 3 more refused for origin since the last line"), second


def test_a_negative_interval_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="refusal_log_interval"):
        guarded(refusal_log_interval=-1)
