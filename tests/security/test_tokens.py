"""Attacks on the token's secrecy: in our logs, and in the scope the app sees."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest
import websockets
from starlette.types import Receive, Scope, Send

from asgi_rt import FirstMessageAuthMiddleware

from .._server import RunningServer

pytestmark = [pytest.mark.anyio, pytest.mark.server]

SECRET = "alice-secret-0123456789"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def authenticate(token: str) -> str | None:
    if token.startswith("explode"):  # a backend error that quotes parts of the token
        raise RuntimeError(f"no key for {token[:-4]}... (suffix {token[8:]})")
    return "alice" if token == SECRET else None


async def _show_scope(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept, then send what the app can see of the handshake."""
    await receive()
    await send({"type": "websocket.accept"})
    seen = {"headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
            "query": scope["query_string"].decode()}  # fmt: skip
    await send({"type": "websocket.send", "text": json.dumps(seen)})
    while (await receive())["type"] != "websocket.disconnect":
        pass


def _app(**options: bool) -> FirstMessageAuthMiddleware:
    return FirstMessageAuthMiddleware(_show_scope, authenticate=authenticate, header=True,
                                      cookie="session", query_param="token",
                                      allow_query_token=True, **options)  # fmt: skip


async def test_part_of_a_token_quoted_by_a_failing_hook_is_masked_in_the_log(
    serve: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(_app())
    token = "explode-" + SECRET
    with caplog.at_level(logging.ERROR, logger="asgi_rt.auth"):
        async with websockets.connect(f"{server.url}/ws") as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            await ws.wait_closed()
    assert "authenticate raised RuntimeError" in caplog.text
    assert token[:-4] not in caplog.text and token[8:] not in caplog.text
    assert "no key for ***" in caplog.text


async def test_handshake_credentials_are_removed_from_the_apps_scope(
    serve: Callable[..., RunningServer],
) -> None:
    server = serve(_app())
    headers = {"Authorization": f"Bearer {SECRET}", "Cookie": f"theme=dark; session={SECRET}"}
    async with websockets.connect(f"{server.url}/ws?a=1", additional_headers=headers) as ws:
        seen = await ws.recv()
    assert SECRET not in seen
    assert ["cookie", "theme=dark"] in json.loads(seen)["headers"]
    async with websockets.connect(f"{server.url}/ws?token={SECRET}&a=1") as ws:
        seen = await ws.recv()
    assert SECRET not in seen and json.loads(seen)["query"] == "a=1"


async def test_an_app_that_asks_keeps_the_credentials(
    serve: Callable[..., RunningServer],
) -> None:
    server = serve(_app(keep_credentials=True))
    headers = {"Authorization": f"Bearer {SECRET}"}
    async with websockets.connect(f"{server.url}/ws", additional_headers=headers) as ws:
        assert ["authorization", f"Bearer {SECRET}"] in json.loads(await ws.recv())["headers"]


async def test_the_on_failure_hook_never_sees_the_credentials(
    serve: Callable[..., RunningServer],
) -> None:
    """A hook that logs its scope (as users' hooks do) must not log the token."""
    seen: list[Scope] = []
    app = FirstMessageAuthMiddleware(
        _show_scope, authenticate=authenticate, header=True,
        on_failure=lambda reason, scope: seen.append(scope),
    )  # fmt: skip
    server = serve(app)
    headers = {"Authorization": "Bearer wrong-" + SECRET}
    with pytest.raises(websockets.InvalidStatus, match="401"):
        await websockets.connect(f"{server.url}/ws", additional_headers=headers)
    assert len(seen) == 1
    assert SECRET not in repr(seen[0])
