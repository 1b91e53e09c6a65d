"""Envelopes, routing, acks and server-initiated requests, under asyncio and trio."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import pytest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import Connection, ConnectionManager, RequestFailed
from asgi_rt.messages import EnvelopeError, Router, decode_envelope, envelope
from asgi_rt.testing import WebSocketSession, websocket_session

pytestmark = pytest.mark.anyio


class Move(BaseModel):
    x: int
    y: int


@dataclass
class Note:
    text: str


def routed_app(router: Router, manager: ConnectionManager | None = None) -> Starlette:
    mgr = manager if manager is not None else ConnectionManager(max_invalid_frames=5)

    async def endpoint(websocket: WebSocket) -> None:
        async with mgr.connect(websocket) as conn:
            await router.serve(conn)

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)])


def make_router(max_size: int | None = 200) -> Router:
    router = Router(max_size=max_size)

    @router.on("move", model=Move)
    async def move(conn: Connection, data: Move) -> dict[str, int]:
        return {"sum": data.x + data.y}

    @router.on("note", model=Note)
    async def note(conn: Connection, data: Note) -> str:
        return data.text.upper()

    @router.on("boom")
    async def boom(conn: Connection, data: Any) -> None:
        raise RuntimeError("handler bug")

    return router


async def error_code(ws: WebSocketSession) -> tuple[str, Any]:
    frame = await ws.receive_json()
    assert frame["type"] == "error", frame
    return frame["data"]["code"], frame.get("id")


async def test_a_handler_result_becomes_the_ack() -> None:
    async with websocket_session(routed_app(make_router()), "/ws") as ws:
        await ws.send_json({"type": "move", "data": {"x": 2, "y": 3}, "id": "a1"})
        assert await ws.receive_json() == {"type": "ack", "id": "a1", "data": {"sum": 5}}
        await ws.send_json({"type": "note", "data": {"text": "hi"}, "id": 7})
        assert await ws.receive_json() == {"type": "ack", "id": 7, "data": "HI"}


@pytest.mark.parametrize(
    ("frame", "code", "id"),
    [
        ("not json", "invalid_json", None),
        ("[1, 2]", "not_an_object", None),
        ('{"data": 1, "id": "q"}', "missing_type", "q"),
        ('{"type": "", "id": "q"}', "missing_type", "q"),
        ('{"type": "move", "id": true}', "bad_field", None),
        ('{"type": "move", "ts": "noon", "id": "q"}', "bad_field", "q"),
        ('{"type": "nope", "id": "q"}', "unknown_type", "q"),
        ('{"type": "move", "data": {"x": "a"}, "id": "q"}', "invalid_data", "q"),
        ('{"type": "note", "data": {"wrong": 1}, "id": "q"}', "invalid_data", "q"),
        ('{"type": "boom", "id": "q"}', "handler_error", "q"),
        ('{"type": "note", "data": {"text": "' + "x" * 300 + '"}}', "too_big", None),
    ],
)
async def test_bad_frames_get_an_error_frame_and_the_connection_goes_on(
    frame: str, code: str, id: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="asgi_rt.messages"):
        async with websocket_session(routed_app(make_router()), "/ws") as ws:
            await ws.send_text(frame)
            assert await error_code(ws) == (code, id)
            await ws.send_json({"type": "move", "data": {"x": 1, "y": 1}, "id": "next"})
            assert (await ws.receive_json())["data"] == {"sum": 2}
    assert ("handler bug" in caplog.text) is (code == "handler_error")  # logged with traceback


async def test_too_many_bad_frames_close_1007() -> None:
    manager = ConnectionManager(max_invalid_frames=3)
    async with websocket_session(routed_app(make_router(), manager), "/ws") as ws:
        for _ in range(2):
            await ws.send_text("junk")
            await error_code(ws)
        await ws.send_text("junk")
        assert await ws.receive_close() == 1007


async def test_server_requests_wait_for_the_clients_ack() -> None:
    router, manager = make_router(), ConnectionManager()
    results: list[Any] = []
    opened = anyio.Event()

    async def endpoint(websocket: WebSocket) -> None:
        async with manager.connect(websocket, id="c") as conn, anyio.create_task_group() as tg:
            tg.start_soon(router.serve, conn)
            opened.set()
            results.append(await conn.request("confirm", {"q": "sure?"}, timeout=5))
            try:
                await conn.request("confirm", None, timeout=0.1)
            except RequestFailed as exc:
                results.append(type(exc).__name__)
            await conn.close()

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    async with websocket_session(app, "/ws") as ws:
        asked = await ws.receive_json()
        assert asked["type"] == "confirm" and asked["data"] == {"q": "sure?"}
        await ws.send_json({"type": "ack", "id": asked["id"], "data": "yes"})
        assert (await ws.receive_json())["type"] == "confirm"  # left unanswered: times out
        await ws.receive_close()
    assert results == ["yes", "RequestFailed"]


async def test_pending_requests_are_bounded() -> None:
    manager = ConnectionManager()
    outcome: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        async with manager.connect(websocket) as conn, anyio.create_task_group() as tg:
            for _ in range(16):
                tg.start_soon(partial(conn.request, "q", None, timeout=10.0))
            await conn.receive()  # the client saw all 16 requests: they all wait for an ack
            try:
                await conn.request("q", None, timeout=1)
            except RequestFailed as exc:
                outcome.append(str(exc))
            tg.cancel_scope.cancel()

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    async with websocket_session(app, "/ws") as ws:
        for _ in range(16):
            assert (await ws.receive_json())["type"] == "q"
        await ws.send_json({"type": "seen"})
        await ws.receive_close()
    assert len(outcome) == 1
    assert outcome[0].startswith("16 requests already wait for an ack")


def test_envelopes_round_trip() -> None:
    message = envelope("chat", {"text": "hi"}, id="m1", seq=4, ts=1.5)
    assert message == {"type": "chat", "data": {"text": "hi"}, "id": "m1", "seq": 4, "ts": 1.5}
    decoded = decode_envelope('{"type": "chat", "data": 1, "id": "m1", "ts": 2}')
    assert (decoded.type, decoded.data, decoded.id, decoded.ts) == ("chat", 1, "m1", 2)


def test_router_registration_is_checked() -> None:
    router = Router()

    @router.on("a")
    async def handler(conn: Connection, data: Any) -> None: ...

    with pytest.raises(ValueError, match="already registered"):
        router.on("a")
    with pytest.raises(ValueError, match="non-empty"):
        router.on("")


@pytest.mark.server
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_error_paths_on_a_real_server(
    serve: Any, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    import websockets

    server = serve(routed_app(make_router(), ConnectionManager(max_invalid_frames=20)))
    async with websockets.connect(f"{server.url}/ws") as ws:
        for frame, code in [("nope", "invalid_json"), ('{"id": "1"}', "missing_type"),
                            ('{"type": "x", "id": "2"}', "unknown_type"),
                            ('{"type": "move", "data": {}, "id": "3"}', "invalid_data"),
                            ('{"type": "boom", "id": "4"}', "handler_error")]:  # fmt: skip
            await ws.send(frame)
            reply = json.loads(await ws.recv())
            assert (reply["type"], reply["data"]["code"]) == ("error", code)
        await ws.send(json.dumps({"type": "move", "data": {"x": 1, "y": 2}, "id": "ok"}))
        assert json.loads(await ws.recv()) == {"type": "ack", "id": "ok", "data": {"sum": 3}}


HOSTILE_FRAMES = [
    ("[" * 1500 + "]" * 1500, "invalid_json"),
    ('{"type": "move", "data": ' + "[" * 65 + "]" * 65 + "}", "invalid_json"),
    ('{"type": "move", "id": "\\ud800"}', "invalid_json"),
    ('{"type": "move", "data": NaN, "id": 1}', "invalid_json"),
    ('{"type": "move", "ts": 1e400}', "invalid_json"),
    ('{"type": "move", "id": ' + "7" * 4400 + "}", "invalid_json"),
    ('{"type": "nan", "id": "n"}', "handler_error"),
]


@pytest.mark.server
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(("frame", "code"), HOSTILE_FRAMES)
async def test_hostile_frames_get_an_error_frame_on_a_real_server(
    serve: Any, anyio_backend: str, frame: str, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    import websockets

    router = make_router(max_size=None)

    @router.on("nan")
    async def nan(conn: Connection, data: Any) -> float:
        return float("nan")  # an ack that cannot be JSON: the handler's bug, told as one

    server = serve(routed_app(router, ConnectionManager(max_invalid_frames=20)))
    with caplog.at_level(logging.ERROR, logger="asgi_rt.messages"):
        async with websockets.connect(f"{server.url}/ws") as ws:
            await ws.send(frame)
            reply = json.loads(await ws.recv())
            assert (reply["type"], reply["data"]["code"]) == ("error", code)
            await ws.send(json.dumps({"type": "move", "data": {"x": 1, "y": 2}, "id": "ok"}))
            assert json.loads(await ws.recv()) == {"type": "ack", "id": "ok", "data": {"sum": 3}}


def test_router_checks_max_json_depth() -> None:
    with pytest.raises(ValueError, match="max_json_depth"):
        Router(max_json_depth=0)
    assert decode_envelope('{"type": "a", "data": [[[]]]}', max_depth=4).data == [[[]]]
    with pytest.raises(EnvelopeError, match="nested deeper than 3"):
        decode_envelope('{"type": "a", "data": [[[]]]}', max_depth=3)


async def test_an_error_message_with_a_lone_surrogate_still_goes_out() -> None:
    def picky(data: Any) -> Any:
        raise ValueError("no \ud800 here")  # a model's error may quote anything

    router = Router()

    @router.on("x", model=picky)
    async def x(conn: Connection, data: Any) -> None:
        raise AssertionError("never reached")

    async with websocket_session(routed_app(router), "/ws") as ws:
        await ws.send_text('{"type": "x", "id": 1}')
        frame = await ws.receive_json()
        assert frame["data"] == {"code": "invalid_data", "message": "no \\ud800 here"}
        await ws.send_text('{"type": "x", "id": 2}')
        assert (await ws.receive_json())["id"] == 2
