"""RoomManager with the memory backend, in process, under asyncio and trio."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import RoomManager
from asgi_rt.backends import BackendUnavailable, MemoryBackend
from asgi_rt.testing import WebSocketSession, websocket_session

from .._poll import await_for

pytestmark = pytest.mark.anyio


def room_app(rooms: RoomManager, joined: Callable[[str], None] | None = None) -> Starlette:
    """``/ws/{room}?id=..&since=..&epoch=..``: join, then publish every frame to the room."""

    async def endpoint(websocket: WebSocket) -> None:
        room = websocket.path_params["room"]
        since, epoch = websocket.query_params.get("since"), websocket.query_params.get("epoch")
        async with rooms.connect(websocket, id=websocket.query_params.get("id")) as conn:
            await rooms.join(conn, room, since=None if since is None else int(since), epoch=epoch)
            if joined is not None:
                joined(conn.id)
            async for text in conn.iter_text():
                await rooms.publish(room, {"text": text}, exclude=conn if text == "quiet" else None)

    return Starlette(routes=[WebSocketRoute("/ws/{room}", endpoint)])


@asynccontextmanager
async def running(**options: Any) -> AsyncIterator[tuple[RoomManager, Any, set[str]]]:
    ready: set[str] = set()
    async with RoomManager(**options) as rooms:
        yield rooms, room_app(rooms, ready.add), ready


async def wait_joined(ready: set[str], *ids: str) -> None:
    await await_for(lambda: set(ids) <= ready, 5, "joined", interval=0.001)


async def frames(ws: WebSocketSession, count: int) -> list[dict[str, Any]]:
    with anyio.fail_after(5):
        return [await ws.receive_json() for _ in range(count)]


def positionless(got: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The frames without their epoch, once it was checked to be one and the same."""
    assert len({f["epoch"] for f in got}) == 1 and all(f["epoch"] for f in got)
    return [{k: v for k, v in f.items() if k != "epoch"} for f in got]


async def test_publish_reaches_every_member_of_the_room_with_seq() -> None:
    async with running() as (rooms, app, ready):
        async with (
            websocket_session(app, "/ws/a?id=1") as one,
            websocket_session(app, "/ws/a?id=2") as two,
            websocket_session(app, "/ws/b?id=3") as other,
        ):
            await wait_joined(ready, "1", "2", "3")
            assert sorted(rooms.rooms()) == ["a", "b"]
            assert {c.id for c in rooms.members("a")} == {"1", "2"}
            await one.send_text("hello")
            await two.send_text("world")
            expected = [{"room": "a", "seq": 1, "data": {"text": "hello"}},
                        {"room": "a", "seq": 2, "data": {"text": "world"}}]  # fmt: skip
            assert positionless(await frames(one, 2)) == expected
            assert positionless(await frames(two, 2)) == expected
            await other.send_text("elsewhere")
            assert positionless(await frames(other, 1)) == [
                {"room": "b", "seq": 1, "data": {"text": "elsewhere"}}
            ]


async def test_exclude_skips_the_sender() -> None:
    async with running() as (_, app, ready):
        async with (
            websocket_session(app, "/ws/a?id=1") as sender,
            websocket_session(app, "/ws/a?id=2") as listener,
        ):
            await wait_joined(ready, "1", "2")
            await sender.send_text("quiet")
            await sender.send_text("loud")
            assert [f["data"]["text"] for f in await frames(listener, 2)] == ["quiet", "loud"]
            assert [f["data"]["text"] for f in await frames(sender, 1)] == ["loud"]


async def test_exclude_names_exactly_the_sender_whatever_its_id() -> None:
    # Ids are the application's: a comma or a newline in one must not exclude anyone
    # else, nor spill into the frame the members get.
    async with running() as (_, app, ready):
        async with (
            websocket_session(app, "/ws/a?id=x%2Cy%0Az") as sender,
            websocket_session(app, "/ws/a?id=x") as one,
            websocket_session(app, "/ws/a?id=y") as two,
        ):
            await wait_joined(ready, "x,y\nz", "x", "y")
            await sender.send_text("quiet")
            await sender.send_text("loud")
            for listener in (one, two):
                assert [f["data"]["text"] for f in await frames(listener, 2)] == ["quiet", "loud"]
            assert [f["data"]["text"] for f in await frames(sender, 1)] == ["loud"]


async def test_disconnect_leaves_rooms_and_empty_rooms_go() -> None:
    async with running() as (rooms, app, ready):
        async with websocket_session(app, "/ws/a?id=1"):
            await wait_joined(ready, "1")
            assert rooms.rooms() == ["a"]
        await await_for(lambda: not rooms.rooms(), 5, "the room to go", interval=0.001)
        assert rooms.members("a") == frozenset()


async def test_join_since_replays_what_was_missed_without_duplicates() -> None:
    async with running() as (_rooms, app, ready):
        async with websocket_session(app, "/ws/a?id=writer") as writer:
            await wait_joined(ready, "writer")
            for i in range(5):
                await writer.send_text(str(i))
            epoch = (await frames(writer, 5))[-1]["epoch"]
            async with websocket_session(app, f"/ws/a?id=late&since=2&epoch={epoch}") as late:
                await wait_joined(ready, "late")
                await writer.send_text("live")
                got = await frames(late, 4)
        assert [f["seq"] for f in got] == [3, 4, 5, 6]
        assert [f["data"]["text"] for f in got] == ["2", "3", "4", "live"]


async def test_join_since_a_trimmed_position_says_recovery_failed() -> None:
    async with running(backend=MemoryBackend(history_size=2)) as (_, app, ready):
        async with websocket_session(app, "/ws/a?id=writer") as writer:
            await wait_joined(ready, "writer")
            for i in range(6):
                await writer.send_text(str(i))
            epoch = (await frames(writer, 6))[-1]["epoch"]
            async with websocket_session(app, f"/ws/a?id=late&since=1&epoch={epoch}") as late:
                notice = await late.receive_json()
                assert notice == {"type": "recovery_failed", "room": "a", "reason": "trimmed",
                                  "seq": 6, "epoch": epoch}  # fmt: skip
                await writer.send_text("after")
                assert (await late.receive_json())["seq"] == 7


async def test_exit_closes_every_connection_with_1001() -> None:
    ready: set[str] = set()
    rooms = RoomManager()
    app = room_app(rooms, ready.add)
    started, stop = anyio.Event(), anyio.Event()

    async def lifespan() -> None:  # a RoomManager refuses connections until it is started
        async with rooms:
            started.set()
            await stop.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lifespan)
        await started.wait()
        async with websocket_session(app, "/ws/a?id=1") as ws:
            await wait_joined(ready, "1")
            stop.set()
            assert await ws.receive_close() == 1001


def test_backend_urls_pick_the_implementation() -> None:
    assert isinstance(RoomManager(backend="memory://").backend, MemoryBackend)
    from asgi_rt.backends.redis import RedisBackend

    assert isinstance(RoomManager(backend="redis://127.0.0.1:1/0").backend, RedisBackend)
    with pytest.raises(ValueError, match="unknown backend URL"):
        RoomManager(backend="kafka://x")


async def test_presence_lists_members_and_announces_join_and_leave() -> None:
    async with running(presence=True) as (rooms, app, ready):
        async with websocket_session(app, "/ws/a?id=1") as first:
            await wait_joined(ready, "1")
            joined_1 = await first.receive_json()
            assert joined_1["data"] == {"type": "presence", "event": "join", "member": {"id": "1"}}
            async with websocket_session(app, "/ws/a?id=2"):
                await wait_joined(ready, "2")
                assert (await first.receive_json())["data"]["member"] == {"id": "2"}
                assert set(await rooms.presence("a")) == {"1", "2"}
            left = await first.receive_json()
            assert left["data"] == {"type": "presence", "event": "leave", "member": {"id": "2"}}
            assert set(await rooms.presence("a")) == {"1"}


async def test_a_raising_presence_info_hook_never_breaks_a_join(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def info(conn: Any) -> dict[str, Any]:
        raise KeyError("display_name")  # a user's hook with a bug

    async with running(presence=True, presence_info=info) as (rooms, app, ready):
        async with websocket_session(app, "/ws/a?id=1") as member:
            await wait_joined(ready, "1")
            joined = await member.receive_json()
            assert joined["data"] == {"type": "presence", "event": "join", "member": {"id": "1"}}
            assert set(await rooms.presence("a")) == {"1"}
    assert "presence_info raised" in caplog.text


async def test_presence_is_off_by_default() -> None:
    async with running() as (rooms, _, _):
        with pytest.raises(RuntimeError, match="presence=True"):
            await rooms.presence("a")


class FlakySubscribe(MemoryBackend):
    """A backplane whose first SUBSCRIBE hangs until ``fail`` is set, then fails, as when
    Redis goes away mid-call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.fail = anyio.Event()

    async def subscribe(self, channel: str) -> None:
        self.calls += 1
        if self.calls == 1:
            await self.fail.wait()
            raise BackendUnavailable("redis went away")
        await super().subscribe(channel)


async def test_a_join_during_a_failing_subscribe_still_gets_the_room() -> None:
    backend = FlakySubscribe()
    async with RoomManager(backend=backend) as rooms:
        app = room_app(rooms)
        async with anyio.create_task_group() as tg:

            async def first() -> None:
                with pytest.raises(BackendUnavailable):
                    async with websocket_session(app, "/ws/a?id=1"):
                        pass

            tg.start_soon(first)
            await await_for(lambda: backend.calls == 1, 5, "the first subscribe")
            async with websocket_session(app, "/ws/a?id=2") as ws:
                await await_for(lambda: rooms.members("a") != frozenset(), 5, "the second join")
                backend.fail.set()  # the first join fails now, after the second one joined
                await await_for(lambda: rooms.get("1") is None, 5, "the first to go")
                await ws.send_text("hello")
                assert (await frames(ws, 1))[0]["data"] == {"text": "hello"}


async def test_announce_tells_the_client_the_rooms_position_and_a_stale_epoch_is_refused() -> None:
    async with RoomManager() as rooms:

        async def endpoint(websocket: WebSocket) -> None:
            since, epoch = websocket.query_params.get("since"), websocket.query_params.get("epoch")
            async with rooms.connect(websocket) as conn:
                await rooms.join(conn, "a", since=int(since) if since else None, epoch=epoch,
                                 announce=True)  # fmt: skip
                async for _ in conn:
                    pass

        app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
        for i in range(2):
            await rooms.publish("a", i)
        position = await rooms.position("a")
        epoch = position[1]
        assert position[0] == 2
        async with websocket_session(app, "/ws") as ws:
            assert await ws.receive_json() == {"type": "joined", "room": "a", "seq": 2,
                                               "epoch": epoch}  # fmt: skip
        async with websocket_session(app, f"/ws?since=1&epoch={epoch}") as ws:
            assert [f.get("seq") for f in await frames(ws, 2)] == [2, 2]  # the replay, joined
        async with websocket_session(app, "/ws?since=1&epoch=stale") as ws:
            recovery, *replayed, joined = await frames(ws, 4)
    # the stale client is told, then given the current epoch from its start (still kept)
    assert recovery == {"type": "recovery_failed", "room": "a", "reason": "epoch changed",
                        "seq": 0, "epoch": epoch}  # fmt: skip
    assert [(f["seq"], f["data"]) for f in replayed] == [(1, 0), (2, 1)]
    assert joined == {"type": "joined", "room": "a", "seq": 2, "epoch": epoch}


async def test_a_resume_that_names_no_epoch_is_refused_with_the_position() -> None:
    """A client that never learned the epoch cannot be resumed into whatever numbering the
    room has now: it is told where the stream continues instead."""
    async with running(backend=MemoryBackend(history_size=0)) as (rooms, app, ready):
        for i in range(3):
            await rooms.publish("a", i)
        async with websocket_session(app, "/ws/a?id=late&since=2") as late:
            notice = await late.receive_json()
            _, epoch = await rooms.position("a")
            assert notice == {"type": "recovery_failed", "room": "a", "reason": "unknown epoch",
                              "seq": 3, "epoch": epoch}  # fmt: skip
            await wait_joined(ready, "late")
            await rooms.publish("a", "next")
            assert (await late.receive_json())["seq"] == 4


async def test_a_resume_at_the_current_position_is_announced_there() -> None:
    """Resuming having missed nothing must not be announced as seq 0, or the next resume
    would replay the whole history as duplicates."""
    async with RoomManager() as rooms:

        async def endpoint(websocket: WebSocket) -> None:
            since, epoch = websocket.query_params["since"], websocket.query_params["epoch"]
            async with rooms.connect(websocket) as conn:
                await rooms.join(conn, "a", since=int(since), epoch=epoch, announce=True)
                async for _ in conn:
                    pass

        app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
        for i in range(3):
            last = await rooms.publish("a", i)
        async with websocket_session(app, f"/ws?since=3&epoch={last.epoch}") as ws:
            assert await ws.receive_json() == {"type": "joined", "room": "a", "seq": 3,
                                               "epoch": last.epoch}  # fmt: skip


class SlowHistory(MemoryBackend):
    """A backplane whose first history read waits until ``release`` is set, as a slow
    Redis would, while live publications keep coming."""

    def __init__(self) -> None:
        super().__init__(history_size=5000)
        self.reading = anyio.Event()
        self.release = anyio.Event()

    async def history(self, channel: str, since: int, epoch: str | None = None) -> Any:
        if not self.reading.is_set():
            self.reading.set()
            await self.release.wait()
        return await super().history(channel, since, epoch)


async def test_a_replay_outlasting_the_live_buffer_loses_nothing() -> None:
    """More live publications arrive during a replay than a member may hold: the oldest
    used to be dropped silently; now the member is replayed again from where it is."""
    backend = SlowHistory()
    async with running(backend=backend, queue_size=5000) as (rooms, app, _):
        await rooms.publish("a", "before")
        async with websocket_session(app, "/ws/a?id=late&since=0", buffer=5000) as late:
            await backend.reading.wait()
            for i in range(1500):
                await rooms.publish("a", i)
            backend.release.set()
            got = await frames(late, 1501)
    assert [f["seq"] for f in got] == list(range(1, 1502))
    assert [f["data"] for f in got] == ["before", *range(1500)]
