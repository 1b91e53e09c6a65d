"""The wire schema (asgi_rt.wire) against the frames a real server sends and accepts: if the
server and the schema drift, these fail; the browser client's types are generated from it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets
from jsonschema import Draft202012Validator

from asgi_rt import RoomManager
from asgi_rt.__main__ import main
from asgi_rt.connections.heartbeat import Heartbeat
from asgi_rt.wire import protocol_schema

from ._client_app import make_app
from ._server import RunningServer
from ._sseclient import events, sse_headers

pytestmark = [pytest.mark.anyio, pytest.mark.server]

SCHEMA = protocol_schema()
DEFINITION = {"auth": "Auth", "auth_ok": "AuthOk", "ping": "Ping", "pong": "Pong",
              "joined": "Joined", "recovery_failed": "RecoveryFailed", "ack": "Ack",
              "error": "Error", None: "RoomFrame"}  # fmt: skip


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the websockets client runs on asyncio


def check(definition: str, frame: Any) -> None:
    """``frame`` is a valid ``$defs/<definition>`` (and so a ServerMessage or ClientMessage)."""
    schema = {**SCHEMA, "$ref": f"#/$defs/{definition}"}
    schema.pop("anyOf")
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(frame)]
    assert errors == [], (definition, frame)


def test_the_schema_is_valid_draft_2020_12_and_printed_by_the_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == SCHEMA


def test_the_schema_refuses_frames_that_are_not_the_protocol() -> None:
    validator = Draft202012Validator({**SCHEMA, "$ref": "#/$defs/RecoveryFailed"})
    assert not validator.is_valid({"type": "recovery_failed", "room": "r", "reason": "oops"})
    assert not Draft202012Validator({**SCHEMA, "$ref": "#/$defs/SseEventId"}).is_valid("7")


async def frames_until(ws: websockets.ClientConnection, kind: str) -> list[Any]:
    """Frames received up to and including the first of type ``kind``."""
    seen: list[Any] = []
    while not seen or seen[-1].get("type") != kind:
        seen.append(json.loads(await ws.recv(decode=True)))
    return seen


async def test_every_frame_of_a_session_matches_the_schema(
    serve: Callable[..., RunningServer],
) -> None:
    rooms = RoomManager(presence=True, heartbeat=Heartbeat(interval=0.2, timeout=30))
    server = serve(make_app(rooms), lifespan="on")
    client: list[Any] = [{"type": "auth", "token": "alice-token"}]
    async with websockets.connect(f"{server.url}/ws/lobby") as ws:
        await ws.send(json.dumps(client[0]))
        received = await frames_until(ws, "joined")
        for frame in ({"type": "say", "data": {"text": "hi"}, "id": 1},
                      {"type": "nope", "id": "x"}, {"type": "ask", "data": "why?", "id": 2},
                      {"type": "pong"}):  # fmt: skip
            client.append(frame)
            await ws.send(json.dumps(frame))
        received += await frames_until(ws, "question")
        answer = {"type": "ack", "id": received[-1]["id"], "data": "because"}
        client.append(answer)
        await ws.send(json.dumps(answer))
        received += await frames_until(ws, "answer")
        received += await frames_until(ws, "ping")
    async with websockets.connect(f"{server.url}/ws/lobby?since=1&epoch=bogus") as ws:
        await ws.send(json.dumps({"type": "auth", "token": "alice-token"}))
        received += await frames_until(ws, "recovery_failed")
    kinds = {frame.get("type", "room frame") for frame in received}
    assert kinds >= {"auth_ok", "joined", "room frame", "ack", "error", "question", "ping",
                     "recovery_failed"}, kinds  # fmt: skip
    for side, frames in (("ServerMessage", received), ("ClientMessage", client)):
        for frame in frames:  # its own definition (the union has the loose Envelope)
            check(DEFINITION.get(frame.get("type"), "Envelope"), frame)
            check(side, frame)


async def test_sse_ids_and_data_match_the_schema(serve: Callable[..., RunningServer]) -> None:
    rooms = RoomManager()
    server = serve(make_app(rooms), lifespan="on")
    url = f"http://127.0.0.1:{server.port}/events/news"
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("GET", url, headers=sse_headers()) as response,
    ):
        stream = events(response)
        async for event in stream:
            if event.data:
                break  # joined: the member is in, so the publication reaches it
        await server.acall(lambda: rooms.publish("news", {"n": 1}))
        async for event in stream:
            if event.data and '"data"' in event.data:
                break
    check("SseEventId", event.id)
    check("RoomFrame", json.loads(event.data))


async def test_room_requests_and_replies_match_the_schema(
    serve: Callable[..., RunningServer],
) -> None:
    server = serve(make_app(RoomManager()), lifespan="on")
    sent = [{"room": "a"}, {"room": "b", "since": 0, "epoch": "x"}, {"room": "a"}]
    async with websockets.connect(f"{server.url}/mux") as ws:
        await ws.send(json.dumps({"type": "auth", "token": "alice-token"}))
        await frames_until(ws, "auth_ok")
        acks = []
        for n, (kind, data) in enumerate(zip(["join", "join", "leave"], sent, strict=True)):
            await ws.send(json.dumps({"type": kind, "data": data, "id": n}))
            acks.append((await frames_until(ws, "ack"))[-1])
    for data in sent:
        check("RoomRequest", data)
    for ack in acks:
        check("Ack", ack)
        check("RoomReply", ack["data"])
