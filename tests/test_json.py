"""Hostile JSON in, unencodable data out: clean errors on a real uvicorn, never a crash."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import ConnectionManager, RoomManager
from asgi_rt._json import BadJSON, check_depth, dumps, loads

from ._server import RunningServer
from ._system import close_of
from .apps import echo_app

pytestmark = [pytest.mark.anyio]

NAN = float("nan")
DEEP = "[" * 1500 + "]" * 1500
NO_UTF8 = "(it has no UTF-8 encoding)"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (DEEP, "nested deeper than 64"),
        ("[" * 65 + "]" * 65, "nested deeper than 64"),
        ('{"a":' * 65 + "1" + "}" * 65, "nested deeper than 64"),
        ("NaN", "NaN is not JSON"),
        ('{"x": -Infinity}', "-Infinity is not JSON"),
        ("[1e400]", "out of range"),
        ('{"a": [1, {"b": "x\\ud800"}]}', f"lone surrogate in 'x\\ud800' {NO_UTF8} at $['a'][1]"),
        ('{"\\udc00": 1}', "lone surrogate"),
        ("1" * 5000, "an integer of over 4300 digits"),
        # a frame too large to search for the path pays no Python walk over its items
        ("[" + "0," * 40_000 + '"\\ud800"]', "a lone surrogate (it has no UTF-8 encoding)"),
    ],
)  # fmt: skip
def test_loads_refuses_what_is_not_json_within_limits(text: str, says: str) -> None:
    with pytest.raises(BadJSON) as caught:
        loads(text)
    assert says in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 64 + "]" * 64,
        '["' + "[" * 200 + '", "\\"[[[[[", "\\\\", {"k": "{{{{"}]',
        json.dumps([{"a": i, "b": [i]} for i in range(300)]),
        '"\\ud83d\\ude00"',
        "[" + "0," * 40_000 + '"\\ud83d\\ude00"]',  # a pair is fine, however wide the frame
        "1" * 4000,
        "-1.5e300",
    ],
)
def test_loads_takes_deep_looking_but_shallow_json(text: str) -> None:
    assert loads(text) == json.loads(text)


def test_brackets_in_strings_do_not_hide_real_depth() -> None:
    text = '["' + "]" * 80 + '", ' + "[" * 70 + "]" * 70 + ', "' + "[" * 80 + '"]'
    with pytest.raises(BadJSON, match="nested deeper"):
        loads(text)


@pytest.mark.parametrize(
    ("value", "error", "says"),
    [
        ({"a": [1, NAN]}, ValueError, "nan (JSON has no NaN or Infinity) at $['a'][1]"),
        ([{"b": -math.inf}], ValueError, "-inf (JSON has no NaN or Infinity) at $[0]['b']"),
        ({"t": "ok\ud800"}, ValueError, f"lone surrogate in 'ok\\ud800' {NO_UTF8} at $['t']"),
        ({"\udfff": 1}, ValueError, f"lone surrogate in '\\udfff' {NO_UTF8} at $ (a key)"),
        ([10**5000], ValueError, "an integer of over 4300 digits at $[0]"),
        ({"o": {1, 2}}, TypeError, "type set ({1, 2}) at $['o']"),
        ({(1, 2): 0}, TypeError, "type tuple ((1, 2)) as a key at $ (a key)"),
    ],
)  # fmt: skip
def test_dumps_names_the_value_and_where_it_is(value: Any, error: type, says: str) -> None:
    with pytest.raises(error) as caught:
        dumps(value)
    assert str(caught.value) == f"cannot encode as JSON: {says}"


def test_dumps_refuses_cycles_and_depth_with_a_value_error() -> None:
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    with pytest.raises(ValueError, match=r"a circular reference at \$\['self'\]"):
        dumps(cycle)
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ValueError, match="nested too deep"):
        dumps(deep)


@pytest.mark.parametrize(
    ("depth", "error"), [(0, ValueError), (501, ValueError), (True, TypeError), ("64", TypeError)]
)
def test_max_json_depth_is_checked_at_construction(depth: Any, error: type) -> None:
    with pytest.raises(error, match="max_json_depth"):
        check_depth(depth)
    with pytest.raises(error, match="max_json_depth"):
        ConnectionManager(max_json_depth=depth)


@pytest.mark.server
@pytest.mark.parametrize(
    "frame", [DEEP, "[NaN]", "[1e999]", '{"x": "\\ud800"}', "9" * 4400, b"[" * 2000]
)
async def test_iter_json_answers_hostile_frames_with_an_error_frame_and_goes_on(
    serve: Callable[..., RunningServer], frame: str | bytes
) -> None:
    server = serve(echo_app(ConnectionManager(max_invalid_frames=3), kind="json"))
    async with websockets.connect(f"{server.url}/ws") as ws:
        await ws.send(frame)
        reply = json.loads(await ws.recv())
        assert (reply["type"], reply["data"]["code"]) == ("error", "invalid_json")
        await ws.send('{"still": "here"}')
        assert json.loads(await ws.recv()) == {"still": "here"}


@pytest.mark.server
async def test_a_deep_frame_counts_as_invalid_and_repeated_ones_close_1007(
    serve: Callable[..., RunningServer],
) -> None:
    server = serve(echo_app(ConnectionManager(max_invalid_frames=2), kind="json"))
    async with websockets.connect(f"{server.url}/ws") as ws:
        await ws.send(DEEP)
        await ws.send(DEEP)
        assert await close_of(ws) == (1007, "too many invalid frames")


def refusing_app(rooms: RoomManager) -> Starlette:
    """``/ws``: joins room "r"; each text frame names an ``ACTIONS`` entry, whose error (if
    any) is sent back as ``{"refused": <type>, "message": ...}``; ``ping`` gets ``pong``."""

    async def endpoint(websocket: WebSocket) -> None:
        async with rooms.connect(websocket) as conn:
            await rooms.join(conn, "r")
            async for text in conn.iter_text():
                if text == "ping":
                    await conn.send("pong")
                    continue
                try:
                    await ACTIONS[text](rooms, conn)
                except (TypeError, ValueError) as exc:
                    await conn.send({"refused": type(exc).__name__, "message": str(exc)})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with rooms:
            yield

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)], lifespan=lifespan)


ACTIONS: dict[str, Any] = {
    "send-nan": lambda rooms, conn: conn.send({"x": [1, NAN]}),
    "send-inf": lambda rooms, conn: conn.send([math.inf]),
    "send-surrogate-text": lambda rooms, conn: conn.send("bad \ud800"),
    "send-surrogate-json": lambda rooms, conn: conn.send({"text": "bad \ud800"}),
    "broadcast-nan": lambda rooms, conn: rooms.broadcast({"x": NAN}),
    "broadcast-surrogate": lambda rooms, conn: rooms.broadcast({"t": "\udfff"}),
    "publish-nan": lambda rooms, conn: rooms.publish("r", {"x": NAN}),
    "publish-surrogate": lambda rooms, conn: rooms.publish("r", {"t": "\ud800"}),
    "request-nan": lambda rooms, conn: conn.request("ask", NAN, timeout=1),
    "send-set": lambda rooms, conn: conn.send({"x": {1}}),
}
EXPECTED = {
    "send-nan": ("ValueError", "nan (JSON has no NaN or Infinity) at $['x'][1]"),
    "send-inf": ("ValueError", "inf (JSON has no NaN or Infinity) at $[0]"),
    "send-surrogate-text": ("ValueError", "cannot send as text: lone surrogate in 'bad \\ud800'"),
    "send-surrogate-json": ("ValueError", "lone surrogate in 'bad \\ud800'"),
    "broadcast-nan": ("ValueError", "nan (JSON has no NaN or Infinity) at $['x']"),
    "broadcast-surrogate": ("ValueError", "lone surrogate in '\\udfff'"),
    "publish-nan": ("ValueError", "nan (JSON has no NaN or Infinity) at $['x']"),
    "publish-surrogate": ("ValueError", "lone surrogate in '\\ud800'"),
    "request-nan": ("ValueError", "nan (JSON has no NaN or Infinity) at $['data']"),
    "send-set": ("TypeError", "type set ({1}) at $['x']"),
}


@pytest.mark.server
@pytest.mark.parametrize("action", sorted(ACTIONS))
async def test_unencodable_data_is_refused_at_the_callers_send_and_nobody_is_closed(
    serve: Callable[..., RunningServer], action: str
) -> None:
    server = serve(refusing_app(RoomManager()), lifespan="on")
    async with (
        websockets.connect(f"{server.url}/ws") as ws,
        websockets.connect(f"{server.url}/ws") as bystander,
    ):
        await ws.send(action)
        reply = json.loads(await ws.recv())
        kind, says = EXPECTED[action]
        assert reply["refused"] == kind
        assert says in reply["message"]
        for client in (ws, bystander):
            await client.send("ping")
            assert await client.recv() == "pong"
