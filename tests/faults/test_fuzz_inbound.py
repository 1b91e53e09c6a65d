"""Hostile inbound frames against the Router, ``iter_json`` and first-message auth on a real
uvicorn, and hostile Python values against the encoder.

Whatever a client sends, it gets an error frame (and the connection goes on) or a clean
close (1000/1003/1007/1008/1009), never 1011 or a dropped socket, and the server logs no
"Exception in ASGI application". One server serves every example of the module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import Connection, ConnectionManager, FirstMessageAuthMiddleware
from asgi_rt._json import dumps
from asgi_rt.messages import Router

from .._rawclient import RawClient, close_code
from .._server import RunningServer

pytestmark = pytest.mark.server

MAX_SIZE = 16 * 1024  # frames over this close 1009 (kept small: cheap oversize examples)
CLEAN_CLOSES = {1000, 1003, 1007, 1008, 1009}
TEXT, BINARY = 0x1, 0x2
FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def fuzz_app() -> FirstMessageAuthMiddleware:
    """``/router``: a Router with an ``echo`` handler; ``/json``: an ``iter_json`` echo; both
    behind first-message auth, which ``/auth`` exercises (token ``good``)."""
    manager = ConnectionManager(max_message_size=MAX_SIZE, max_invalid_frames=1000)
    router = Router()

    @router.on("echo")
    async def echo(conn: Connection, data: Any) -> Any:
        return data

    async def routed(websocket: WebSocket) -> None:
        async with manager.connect(websocket) as conn:
            await router.serve(conn)

    async def json_echo(websocket: WebSocket) -> None:
        async with manager.connect(websocket) as conn:
            async for value in conn.iter_json():
                await conn.send([value])  # send() takes containers; iter_json yields any value

    async def authenticate(token: str) -> str | None:
        return "alice" if token == "good" else None

    routes = [WebSocketRoute("/router", routed), WebSocketRoute("/json", json_echo),
              WebSocketRoute("/auth", json_echo)]  # fmt: skip
    return FirstMessageAuthMiddleware(
        Starlette(routes=routes), authenticate=authenticate, timeout=10
    )


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = RunningServer(fuzz_app())
    running.start()
    yield running
    running.stop()
    assert running.loop_errors == []
    assert [r.getMessage() for r in running.log.records] == []


def _envelope(data: str) -> str:
    return '{"type":"echo","id":"x","data":' + data + "}"


_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
    allow_infinity=False) | st.text(max_size=20)  # fmt: skip
json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
NESTS = {
    "[": lambda n: "[" * n + "]" * n,
    "{": lambda n: '{"a":' * n + "1" + "}" * n,
    "open": lambda n: "[" * n,  # never closed: invalid and deep
}
nesting = st.builds(lambda n, k: NESTS[k](n), st.integers(1, 3000), st.sampled_from(list(NESTS)))
huge_ints = st.integers(4200, 6000).map(lambda n: "9" * n)
constants = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e999", "[NaN]"])
surrogates = st.sampled_from(["\\ud800", "\\udfff", "\\ud83d", "x\\udc00y"]).map(lambda s: f'"{s}"')
hostile_json = st.one_of(nesting, huge_ints, constants, surrogates,
                         json_values.map(json.dumps))  # fmt: skip


def _invalid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


# (opcode, payload): hostile JSON on its own and inside an envelope, invalid UTF-8 in a text
# frame, binary frames, oversize frames, random unicode
frames = st.one_of(
    hostile_json.map(lambda t: (TEXT, t.encode())),
    hostile_json.map(lambda t: (TEXT, _envelope(t).encode())),
    surrogates.map(lambda s: (TEXT, ('{"type":' + s + ',"id":' + s + "}").encode())),
    st.binary(min_size=1, max_size=64).filter(_invalid_utf8).map(lambda b: (TEXT, b)),
    st.binary(max_size=64).map(lambda b: (BINARY, b)),
    hostile_json.map(lambda t: (BINARY, _envelope(t).encode())),
    st.integers(MAX_SIZE + 1, MAX_SIZE * 2).map(lambda n: (TEXT, b"[" + b"1," * (n // 2) + b"1]")),
    st.text(max_size=80).map(lambda t: (TEXT, t.encode("utf-8", "surrogatepass"))),
)  # fmt: skip


def _login(client: RawClient) -> None:
    client.send_text('{"type":"auth","token":"good"}')
    frame = client.next_frame()
    assert frame == (TEXT, b'{"type":"auth_ok"}'), frame


def _check_reply(server: RunningServer, client: RawClient, path: str) -> bool:
    """The server's answer to one hostile frame is an error frame or a clean close (and
    then ``False``); anything it sends is standard JSON in valid UTF-8."""
    frame = client.next_frame()
    assert frame is not None, "no answer: the socket was dropped (1006) or the server hung"
    opcode, payload = frame
    if opcode == 0x8:
        assert close_code([frame]) in CLEAN_CLOSES, close_code([frame])
        return False
    assert opcode == TEXT
    reply = strict_loads(payload.decode("utf-8"))
    if path == "/router":
        assert reply["type"] in {"error", "ack"}, reply
    return True


def strict_loads(text: str) -> Any:
    """What a browser's ``JSON.parse`` accepts: no NaN/Infinity literals."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _follow_up(client: RawClient, path: str) -> None:
    """A valid frame after the hostile one still works: the connection task did not crash."""
    client.send_text(_envelope('{"ok":1}') if path == "/router" else '{"ok":1}')
    while (frame := client.next_frame()) is not None and frame[0] == TEXT:
        reply = json.loads(frame[1])
        if not (isinstance(reply, dict) and reply.get("type") == "error"):  # not yet: skip
            assert reply in ({"type": "ack", "id": "x", "data": {"ok": 1}}, [{"ok": 1}]), reply
            return
    raise AssertionError(f"no answer to a valid frame after a hostile one: {frame}")


def _fuzz_once(server: RunningServer, path: str, opcode: int, payload: bytes) -> None:
    client = RawClient(server.port, path, rcvbuf=None)
    try:
        assert client.status == 101
        _login(client)
        client.send_frame(opcode, payload)
        if _check_reply(server, client, path):
            _follow_up(client, path)
    finally:
        client.close()
    assert [r.getMessage() for r in server.log.records] == []
    assert server.loop_errors == []


@FUZZ
@given(frame=frames)
def test_router_answers_any_frame_cleanly(server: RunningServer, frame: tuple[int, bytes]) -> None:
    _fuzz_once(server, "/router", *frame)


@FUZZ
@given(frame=frames)
def test_iter_json_answers_any_frame_cleanly(
    server: RunningServer, frame: tuple[int, bytes]
) -> None:
    _fuzz_once(server, "/json", *frame)


@FUZZ
@given(frame=frames)
def test_auth_refuses_any_first_frame_cleanly(
    server: RunningServer, frame: tuple[int, bytes]
) -> None:
    client = RawClient(server.port, "/auth", rcvbuf=None)
    try:
        client.send_frame(*frame)
        answer = client.next_frame()
    finally:
        client.close()
    assert answer is not None, "no answer: the socket was dropped (1006) or the server hung"
    assert close_code([answer]) in {1007, 1008, 1009}, answer
    assert [r.getMessage() for r in server.log.records] == []


# Encoder: any Python value either encodes to text a strict parser (and JSON.parse) accepts,
# or is refused with TypeError/ValueError at the call.
_any_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(10**5000), max_value=10**5000)
    | st.floats() | st.text() | st.binary(max_size=4) | st.sets(st.integers(), max_size=2)
    | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
)  # fmt: skip
hostile_values = st.recursive(
    _any_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.one_of(st.text(max_size=4), st.integers(), st.floats(),
                                st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)),
                      inner, max_size=3),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=300, deadline=None, database=None)
@given(value=hostile_values)
def test_the_encoder_emits_standard_json_or_refuses_at_the_call(value: Any) -> None:
    try:
        text = dumps(value)
    except (TypeError, ValueError) as exc:
        refused = str(exc)
        assert refused.startswith("cannot encode as JSON: "), refused
        return
    text.encode("utf-8")  # valid UTF-8: the socket can write it
    decoded = strict_loads(text)
    assert not any(isinstance(x, float) and not math.isfinite(x) for x in _leaves(decoded))


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value
