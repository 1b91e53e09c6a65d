"""SSE members of the same managers, against a real uvicorn with real HTTP and WS clients."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import ConnectionManager, Overflow, RoomManager
from asgi_rt.sse import EventStreamResponse, ServerSentEvent, format_event, parse_last_event_id

from ._poll import await_for
from ._server import RunningServer
from ._sseclient import Event, events, next_data_event, sse_headers

pytestmark = pytest.mark.anyio


class Harness:
    """A Starlette app with a RoomManager, WS and SSE routes; records what streams did."""

    def __init__(self, **options: Any) -> None:
        self.rooms = RoomManager(**options)
        self.source_closed = anyio.Event()
        self.source_sent = 0
        routes = [
            WebSocketRoute("/ws/{room}", self.ws),
            Route("/events/{room}", self.events),
            Route("/tokens", self.tokens),
        ]
        self.app = Starlette(routes=routes, lifespan=self.lifespan)

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with self.rooms:
            yield

    async def ws(self, websocket: WebSocket) -> None:
        async with self.rooms.connect(websocket) as conn:
            await self.rooms.join(conn, websocket.path_params["room"])
            await conn.send({"type": "joined"})
            async for text in conn.iter_text():
                await self.rooms.publish(websocket.path_params["room"], text)

    async def events(self, request: Request) -> EventStreamResponse:
        heartbeat = float(request.query_params.get("heartbeat", "15"))
        return EventStreamResponse(self.rooms, room=request.path_params["room"],
                                   heartbeat=heartbeat, retry=1500)  # fmt: skip

    async def tokens(self, request: Request) -> EventStreamResponse:
        count = int(request.query_params.get("count", "5"))
        pad = "x" * int(request.query_params.get("pad", "0"))
        fail = request.query_params.get("fail") == "1"
        source = self._tokens(count, pad, fail)
        return EventStreamResponse(self.rooms, source=source, heartbeat=None)

    async def _tokens(self, count: int, pad: str, fail: bool) -> AsyncIterator[Any]:
        try:
            for i in range(count):
                self.source_sent += 1
                yield ServerSentEvent(f"token {i}{pad}", event="token") if i % 2 else {"token": i}
            if fail:
                raise RuntimeError("the model crashed")
        finally:
            self.source_closed.set()

    async def publish(self, server: RunningServer, room: str, data: Any) -> None:
        await server.acall(lambda: self.rooms.publish(room, data))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the server runs on asyncio in its own thread


@pytest.fixture
def harness() -> Harness:
    return Harness()


@pytest.fixture
def server(serve: Callable[..., RunningServer], harness: Harness) -> RunningServer:
    return serve(harness.app, lifespan="on")


def http_url(server: RunningServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


@asynccontextmanager
async def subscribe(
    server: RunningServer, path: str, last_event_id: str | None = None
) -> AsyncIterator[tuple[httpx.Response, AsyncIterator[Event]]]:
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream("GET", http_url(server, path), headers=sse_headers(last_event_id)) as resp,
    ):
        yield resp, events(resp)


async def test_one_publish_reaches_websocket_and_sse_members_alike(
    server: RunningServer, harness: Harness
) -> None:
    async with (
        subscribe(server, "/events/lobby") as (response, stream),
        websockets.connect(f"{server.url}/ws/lobby") as ws,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert (await anext(stream)).retry == 1500
        await ws.recv()  # joined
        await ws.send("hello")
        frame = await ws.recv()
        event = await next_data_event(stream)
    assert event.data == frame
    assert event.id is not None
    position = parse_last_event_id(event.id)
    assert position is not None
    seq, epoch = position
    assert json.loads(frame) == {"room": "lobby", "seq": 1, "epoch": epoch, "data": "hello"}
    assert seq == 1 and epoch


async def test_multi_line_data_becomes_one_event_of_several_data_lines(
    server: RunningServer, harness: Harness
) -> None:
    async with subscribe(server, "/events/lobby") as (_, stream):
        await await_for(lambda: len(harness.rooms) == 1, what="the subscriber")
        await server.acall(lambda: harness.rooms.broadcast("line one\nline two\r\nthree"))
        event = await next_data_event(stream)
    assert event.data == "line one\nline two\nthree"
    assert event.id is None  # not a room publication: nothing to resume from


async def test_last_event_id_resumes_the_room_exactly_once_in_order(
    server: RunningServer, harness: Harness
) -> None:
    async with subscribe(server, "/events/news") as (_, stream):
        await await_for(lambda: "news" in harness.rooms.rooms(), what="the join")
        for i in range(3):
            await harness.publish(server, "news", i)
        got = [await next_data_event(stream) for _ in range(3)]
    last_id = got[-1].id
    await await_for(lambda: len(harness.rooms) == 0, what="the disconnect")
    for i in range(3, 6):
        await harness.publish(server, "news", i)
    async with subscribe(server, "/events/news", last_event_id=last_id) as (_, stream):
        replayed = [await next_data_event(stream) for _ in range(3)]
        await harness.publish(server, "news", 6)
        live = await next_data_event(stream)
    datas = [json.loads(e.data)["data"] for e in [*got, *replayed, live]]
    assert datas == list(range(7))


async def test_a_stream_that_saw_no_publication_still_resumes(
    server: RunningServer, harness: Harness
) -> None:
    async with subscribe(server, "/events/quiet") as (_, stream):
        joined = await next_data_event(stream, joined=True)
    epoch = json.loads(joined.data)["epoch"]  # a room has an epoch from its first join
    assert json.loads(joined.data) == {"type": "joined", "room": "quiet", "seq": 0, "epoch": epoch}
    assert joined.id == f"{epoch}:0"  # what EventSource will send back as Last-Event-ID
    await await_for(lambda: len(harness.rooms) == 0, what="the disconnect")
    await harness.publish(server, "quiet", "while away")
    async with subscribe(server, "/events/quiet", last_event_id=joined.id) as (_, stream):
        missed = await next_data_event(stream)
    assert json.loads(missed.data)["data"] == "while away"


async def test_an_unknown_last_event_id_says_recovery_failed(
    server: RunningServer, harness: Harness
) -> None:
    async with subscribe(server, "/events/news", last_event_id="garbage") as (_, stream):
        event = await next_data_event(stream)
    notice = json.loads(event.data)
    assert notice == {"type": "recovery_failed", "room": "news", "reason": "unknown position",
                      "seq": 0, "epoch": notice["epoch"]}  # fmt: skip
    assert event.id == f"{notice['epoch']}:0"  # the browser resends a position that works


async def test_a_last_event_id_of_non_ascii_digits_says_recovery_failed(
    server: RunningServer,
) -> None:
    headers = {"accept": b"text/event-stream", "last-event-id": b"e:\xb2"}  # latin-1 for "e:²"
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream("GET", http_url(server, "/events/news"), headers=headers) as resp,
    ):
        assert resp.status_code == 200
        event = await next_data_event(events(resp))
    assert json.loads(event.data)["reason"] == "unknown position"


async def test_a_stale_epoch_says_recovery_failed(server: RunningServer, harness: Harness) -> None:
    async with subscribe(server, "/events/news", last_event_id="oldepoch:3") as (_, stream):
        event = await next_data_event(stream)
    assert json.loads(event.data)["reason"] == "epoch changed"


async def test_client_disconnect_unregisters_promptly(
    server: RunningServer, harness: Harness
) -> None:
    async with subscribe(server, "/events/a") as _:
        await await_for(lambda: len(harness.rooms) == 1, what="the subscriber")
    await await_for(lambda: len(harness.rooms) == 0, timeout=5, what="the disconnect")
    assert harness.rooms.rooms() == []
    assert server.task_count() <= 3  # uvicorn's own; no stream task left behind


async def test_heartbeat_comments_flow_while_idle(server: RunningServer, harness: Harness) -> None:
    async with subscribe(server, "/events/a?heartbeat=0.05") as (_, stream):
        comments = [e async for e in _take(stream, 5) if e.comments]  # after retry, joined
    assert len(comments) >= 3
    assert all(e.comments == ["ping"] for e in comments)


async def test_a_source_is_sent_at_the_clients_pace_then_the_stream_ends(
    server: RunningServer, harness: Harness
) -> None:
    async with subscribe(server, "/tokens?count=4") as (_, stream):
        received = [e async for e in stream]
    assert [(e.event, e.data) for e in received] == [
        ("message", '{"token":0}'), ("token", "token 1"), ("message", '{"token":2}'),
        ("token", "token 3"), ("close", '{"code":1000,"reason":""}'),
    ]  # fmt: skip
    await await_for(harness.source_closed.is_set, what="the source to be closed")


async def test_a_source_that_raises_ends_the_stream_with_1011_not_a_server_error(
    server: RunningServer, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    async with subscribe(server, "/tokens?count=1&fail=1") as (_, stream):
        received = [e async for e in stream]
    assert [(e.event, e.data) for e in received] == [
        ("message", '{"token":0}'), ("close", '{"code":1011,"reason":"internal error"}'),
    ]  # fmt: skip
    assert "the model crashed" in caplog.text  # logged with its traceback, by asgi_rt.sse


async def test_a_source_is_closed_when_the_client_leaves(
    server: RunningServer, harness: Harness
) -> None:
    async with subscribe(server, "/tokens?count=1000000") as (_, stream):
        await next_data_event(stream)
    await await_for(harness.source_closed.is_set, what="aclose() of the source")
    assert harness.source_sent < 1_000_000  # not run to the end


async def test_a_source_waits_for_a_reader_that_stopped_reading(
    serve: Callable[..., RunningServer],
) -> None:
    harness = Harness(send_timeout=None)
    server = serve(harness.app, lifespan="on", sndbuf=4096)
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /tokens?count=100000&pad=16384 HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        await await_for(lambda: any(c.busy for c in harness.rooms), what="a full pipe")
        conn = next(iter(harness.rooms))
        assert conn.queued == 0  # the source waits instead of queueing: nothing overflows
        assert harness.source_sent < 400  # what the socket buffers hold, not 100000
    finally:
        stalled.close()
    await await_for(harness.source_closed.is_set, what="aclose() of the source")


async def test_a_stalled_sse_reader_is_closed_and_nobody_else_waits(
    serve: Callable[..., RunningServer],
) -> None:
    harness = Harness(queue_size=8, overflow=Overflow.DISCONNECT, send_timeout=None)
    server = serve(harness.app, lifespan="on", sndbuf=4096)
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /events/r HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    try:
        async with subscribe(server, "/events/r") as (_, stream):
            await await_for(lambda: len(harness.rooms) == 2, what="both subscribers")
            got: list[int] = []

            async def read() -> None:
                for _ in range(200):
                    got.append(json.loads((await next_data_event(stream)).data)["data"]["i"])

            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                for i in range(200):
                    await harness.publish(server, "r", {"i": i, "pad": "x" * 16384})
                    await await_for(lambda i=i: len(got) > i, what=f"event {i}")  # type: ignore[misc]
        stats = harness.rooms.stats()
    finally:
        stalled.close()
    assert got == list(range(200))
    assert stats.slow_consumer_disconnects == 1


async def test_an_sse_subscriber_is_ignored_by_the_app_level_heartbeat(
    serve: Callable[..., RunningServer],
) -> None:
    from asgi_rt import Heartbeat

    harness = Harness(heartbeat=Heartbeat(interval=0.05, timeout=0.05), idle_timeout=0.1)
    server = serve(harness.app, lifespan="on")
    async with subscribe(server, "/events/a?heartbeat=0.05") as (_, stream):
        async for _ in _take(stream, 8):  # well past both timeouts
            pass
        assert len(harness.rooms) == 1


async def _take(stream: AsyncIterator[Event], n: int) -> AsyncIterator[Event]:
    for _ in range(n):
        yield await anext(stream)


def test_format_event_splits_lines_and_carries_fields() -> None:
    assert format_event("a\nb", event="e", id="x:1") == b"id: x:1\nevent: e\ndata: a\ndata: b\n\n"
    assert format_event(comment="ping") == b": ping\n\n"
    assert format_event(retry=2000) == b"retry: 2000\n\n"


def test_parse_last_event_id() -> None:
    assert parse_last_event_id("ab12:7") == (7, "ab12")
    assert parse_last_event_id(":0") == (0, None)  # a room nothing was published to yet
    for bad in (None, "", "7", "ab:", "ab:x", "ab:-1", "ab:" + "9" * 30, "ab:\u00b2", "ab:\u0661"):
        assert parse_last_event_id(bad) is None, bad


def test_options_are_checked() -> None:
    manager = ConnectionManager()
    with pytest.raises(ValueError, match="heartbeat"):
        EventStreamResponse(manager, heartbeat=0)
    with pytest.raises(ValueError, match="retry"):
        EventStreamResponse(manager, retry=-1)
    with pytest.raises(TypeError, match="RoomManager"):
        EventStreamResponse(manager, room="a")


class InProcess:
    """Drive an EventStreamResponse as a server would, without sockets (asyncio and trio)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.disconnect = anyio.Event()
        self.got_body = anyio.Event()

    async def receive(self) -> dict[str, Any]:
        if not self.sent:
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message.get("body"):
            self.got_body.set()

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent)


SCOPE = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}


async def open_streams(tg: Any, manager: ConnectionManager, *drivers: InProcess) -> None:
    """Start one EventStreamResponse per driver in ``tg``; return once all are registered."""
    for driver in drivers:
        tg.start_soon(EventStreamResponse(manager, heartbeat=None), SCOPE, driver.receive,
                      driver.send)  # fmt: skip
    await await_for(lambda: len(manager) == len(drivers), what="registration")


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_in_process_broadcast_then_disconnect(anyio_backend: str) -> None:
    manager, driver = ConnectionManager(), InProcess()
    async with anyio.create_task_group() as tg:
        await open_streams(tg, manager, driver)
        assert await manager.broadcast({"n": 1}) == 1
        await driver.got_body.wait()
        driver.disconnect.set()
    assert len(manager) == 0
    assert driver.sent[0]["status"] == 200
    assert driver.body == b'data: {"n":1}\n\n'  # the peer left: no close event written


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_in_process_manager_close_writes_a_close_event(anyio_backend: str) -> None:
    manager, driver = ConnectionManager(), InProcess()
    async with anyio.create_task_group() as tg:
        await open_streams(tg, manager, driver)
        await manager.close_all(1012, "service restart")
    assert driver.body.endswith(b'event: close\ndata: {"code":1012,"reason":"service restart"}\n\n')
    assert driver.sent[-1]["more_body"] is False


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_broadcast_is_framed_once_for_every_sse_member(anyio_backend: str) -> None:
    manager, drivers = ConnectionManager(), [InProcess(), InProcess()]
    async with anyio.create_task_group() as tg:
        await open_streams(tg, manager, *drivers)
        await manager.broadcast("once")
        for driver in drivers:
            await driver.got_body.wait()
            driver.disconnect.set()
    first, second = (driver.sent[-1]["body"] for driver in drivers)
    assert first == b"data: once\n\n" and first is second
