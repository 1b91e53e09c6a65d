"""How ResilientClient gives up, against real uvicorn servers: caught as itself around the
block, counted from ``auth_ok``, naming the phase, HTTP statuses and ``Retry-After`` obeyed."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import websockets
from starlette.types import Receive, Scope, Send

from asgi_rt import HandshakeMiddleware, RoomManager
from asgi_rt._retry_hint import parse_retry_after
from asgi_rt.client import Backoff, ClientGaveUp, Disconnect, ResilientClient

from .._rooms_app import make_app
from .._server import RunningServer
from .._system import free_port
from .test_resilient import Recording

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the websockets client is asyncio only


async def _run_until_given_up(url: str, **options: Any) -> ClientGaveUp:
    """What leaves ``async with ResilientClient(...)`` when it gives up, caught outside."""
    with anyio.fail_after(30):  # a client that never gives up fails here, not by the timeout
        try:
            async with ResilientClient(url, **options) as client:
                async for _ in client:
                    pass
        except ClientGaveUp as gave_up:  # as itself, not in an ExceptionGroup
            return gave_up
    raise AssertionError("the block ended without ClientGaveUp")


async def test_client_gave_up_leaves_the_block_as_itself() -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    gave_up = await _run_until_given_up(url, policy=Recording(max_failures=2))
    assert gave_up.phase == "connect" and gave_up.status is None
    assert "after 2 failure(s); last: connect failed:" in str(gave_up)


async def hold_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Accepts and holds the socket open: never answers an auth frame, never closes."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def test_an_auth_timeout_is_a_failed_attempt_not_uptime(
    serve: Callable[..., RunningServer],
) -> None:
    server = serve(hold_app)
    policy = Recording(max_failures=3, stable_after=0.1)  # shorter than the auth wait
    gave_up = await _run_until_given_up(f"{server.url}/ws", token="t", auth_timeout=0.3,
                                        policy=policy)  # fmt: skip
    assert [d.failures for d in policy.seen] == [1, 2, 3]
    assert [(d.phase, d.uptime) for d in policy.seen] == [("auth", 0.0)] * 3
    assert gave_up.phase == "auth"
    assert str(gave_up).endswith("last: auth failed: timed out waiting for auth_ok")


@pytest.mark.parametrize(("limit", "status"), [("max_connections", 503),
                                               ("max_connections_per_client", 429)])  # fmt: skip
async def test_load_shedding_is_a_status_whose_retry_after_is_obeyed(
    serve: Callable[..., RunningServer], limit: str, status: int
) -> None:
    app = HandshakeMiddleware(hold_app, allowed_origins=["*"], allow_missing_origin=True,
                              retry_after=2, **{limit: 1})  # fmt: skip
    server = serve(app)
    delays: list[float | None] = []

    class Obeying(Recording):
        def next_delay(self, disconnect: Disconnect) -> float | None:
            delays.append(super().next_delay(disconnect))
            return delays[-1]

    policy = Obeying(max_failures=2, maximum=0.05)
    async with websockets.connect(f"{server.url}/ws"):  # takes the only slot
        gave_up = await _run_until_given_up(f"{server.url}/ws", policy=policy)
    assert (gave_up.status, gave_up.phase) == (status, "handshake")
    assert f"last: handshake refused with HTTP {status} (Retry-After 2 s)" in str(gave_up)
    assert [(d.status, d.retry_after) for d in policy.seen] == [(status, 2.0)] * 2
    assert delays[0] == 2.0  # the backoff alone would have waited at most 0.05 s


async def test_a_refused_token_names_the_auth_phase(serve: Callable[..., RunningServer]) -> None:
    server = serve(make_app(RoomManager()), lifespan="on")
    gave_up = await _run_until_given_up(f"{server.url}/ws/a", token="bad", policy=Recording())
    assert (gave_up.code, gave_up.phase) == (1008, "auth")
    assert "last: auth refused: close 1008" in str(gave_up)


def test_retry_after_is_capped_by_max_retry_after() -> None:
    policy = Backoff(initial=0.1, maximum=0.1, max_retry_after=5, rng=random.Random(1))
    asked = Disconnect(None, "", 1, 0, status=503, phase="handshake", retry_after=3600)
    assert policy.next_delay(asked) == 5
    assert policy.next_delay(Disconnect(None, "", 1, 0, retry_after=None)) is not None
    with pytest.raises(ValueError, match="max_retry_after"):
        Backoff(max_retry_after=-1)


HEADER_VALUES = [("3", 3.0), (" 1.5 ", 1.5), ("-4", 0.0), ("soon", None), (None, None),
                 ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0)]  # fmt: skip


@pytest.mark.parametrize(("value", "seconds"), HEADER_VALUES)
def test_retry_after_header_values(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


@pytest.mark.parametrize(("bad", "error"), [(-1, ValueError), ((5, 1), ValueError),
                                            ("2", TypeError), (True, TypeError)])  # fmt: skip
def test_retry_after_option_is_checked(bad: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="retry_after"):
        HandshakeMiddleware(hold_app, allowed_origins=["*"], retry_after=bad)


async def restart_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Closes as a draining server does, with a suggested delay in the reason."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    reason = "service restart; retry in 0.5s"
    await send({"type": "websocket.close", "code": 1012, "reason": reason})


async def test_the_delay_a_drain_suggests_is_obeyed(serve: Callable[..., RunningServer]) -> None:
    server = serve(restart_app)
    delays: list[float | None] = []

    class Obeying(Recording):
        def next_delay(self, disconnect: Disconnect) -> float | None:
            delays.append(super().next_delay(disconnect))
            return delays[-1]

    policy = Obeying(max_failures=2, initial=0.01, maximum=0.01)
    gave_up = await _run_until_given_up(f"{server.url}/ws", policy=policy)
    assert [(d.code, d.retry_after) for d in policy.seen] == [(1012, 0.5)] * 2
    assert delays[0] == 0.5  # not the backoff's 0.01 s at most
    assert "closed by the server: close 1012 'service restart; retry in 0.5s'" in str(gave_up)
