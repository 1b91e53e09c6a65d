"""Many rooms over one socket (asgi_rt.rooms_protocol) on a real uvicorn with a real
websockets client: join, refuse, leave, resume, bad data answered and survived."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import RoomManager
from asgi_rt.messages import Router
from asgi_rt.rooms_protocol import room_handlers

from ._server import RunningServer

pytestmark = [pytest.mark.anyio, pytest.mark.server]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the websockets client runs on asyncio


def make_app(rooms: RoomManager) -> Starlette:
    router = Router()
    room_handlers(router, rooms, allow=lambda conn, room: room != "secret", max_rooms=2)

    async def socket(websocket: WebSocket) -> None:
        async with rooms.connect(websocket) as conn:
            await router.serve(conn)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with rooms:
            yield

    return Starlette(routes=[WebSocketRoute("/ws", socket)], lifespan=lifespan)


async def ask(ws: websockets.ClientConnection, type: str, data: Any, id: int) -> list[Any]:
    """Frames up to and including the answer (ack or error) to request ``id``."""
    await ws.send(json.dumps({"type": type, "data": data, "id": id}))
    frames = [json.loads(await ws.recv())]
    while frames[-1].get("id") != id:
        frames.append(json.loads(await ws.recv()))
    return frames


async def test_one_socket_joins_two_rooms_is_refused_a_third_and_leaves(
    serve: Callable[..., RunningServer],
) -> None:
    rooms = RoomManager()
    server = serve(make_app(rooms), lifespan="on")
    async with websockets.connect(f"{server.url}/ws") as ws:
        for n, room in enumerate(["a", "b"]):
            *before, ack = await ask(ws, "join", {"room": room}, n)
            assert before[-1]["type"] == "joined" and before[-1]["room"] == room
            assert ack == {"type": "ack", "id": n, "data": {"room": room, "joined": True}}
        assert (await ask(ws, "join", {"room": "secret"}, 3))[-1]["data"] == {
            "room": "secret", "joined": False, "reason": "not allowed"}  # fmt: skip
        assert (await ask(ws, "join", {"room": "c"}, 4))[-1]["data"]["reason"] == (
            "in 2 rooms already")  # fmt: skip
        bad = (await ask(ws, "join", {"room": "a", "since": -1}, 5))[-1]
        assert bad["type"] == "error" and bad["data"]["code"] == "invalid_data"
        left = (await ask(ws, "leave", {"room": "a"}, 6))[-1]
        assert left["data"] == {"room": "a", "joined": False}
        await server.acall(lambda: rooms.publish("a", "to a"))
        await server.acall(lambda: rooms.publish("b", "to b"))
        frame = json.loads(await ws.recv())
        assert (frame["room"], frame["data"]) == ("b", "to b")  # nothing from the room it left


async def test_a_join_with_since_and_epoch_resumes_the_room(
    serve: Callable[..., RunningServer],
) -> None:
    rooms = RoomManager()
    server = serve(make_app(rooms), lifespan="on")
    async with websockets.connect(f"{server.url}/ws") as ws:
        joined = (await ask(ws, "join", {"room": "a"}, 1))[0]
        await server.acall(lambda: rooms.publish("a", 1))
        first = json.loads(await ws.recv())
    for n in (2, 3):
        await server.acall(lambda n=n: rooms.publish("a", n))
    async with websockets.connect(f"{server.url}/ws") as ws:
        resume = {"room": "a", "since": first["seq"], "epoch": joined["epoch"]}
        frames = await ask(ws, "join", resume, 1)
    assert [f["data"] for f in frames if "data" in f and "seq" in f] == [2, 3]
    assert frames[-1]["data"] == {"room": "a", "joined": True}


async def test_a_join_the_managers_authorize_refuses_is_an_answer_not_an_error(
    serve: Callable[..., RunningServer],
) -> None:
    """``RoomManager(authorize=)`` refusing a multiplexed join used to come back as a
    handler_error with a traceback logged at ERROR per attempt (a client could flood the
    log); it is the protocol's refusal, and the socket carries on."""

    async def authorize(principal: Any, action: str, room: str) -> bool:
        return room != "private-admin"

    rooms = RoomManager(authorize=authorize)
    server = serve(make_app(rooms), lifespan="on")  # the fixture fails on any ERROR log
    async with websockets.connect(f"{server.url}/ws") as ws:
        for n in range(3):
            refused = (await ask(ws, "join", {"room": "private-admin"}, n))[-1]
            assert refused == {"type": "ack", "id": n, "data": {
                "room": "private-admin", "joined": False, "reason": "not allowed"}}  # fmt: skip
        assert (await ask(ws, "join", {"room": "a"}, 9))[-1]["data"]["joined"] is True
