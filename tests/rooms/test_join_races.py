"""RoomManager.join when the backplane is slow or fails part-way, in process (asyncio, trio).

Driven through a minimal Transport so that each step can be placed exactly.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from starlette.websockets import WebSocketState

from asgi_rt import RoomManager
from asgi_rt.backends import BackendUnavailable, MemoryBackend, Publication

from .._poll import await_for

pytestmark = pytest.mark.anyio


class Peer:
    """A connected socket that records what it is sent and never says anything."""

    def __init__(self) -> None:
        self.application_state = WebSocketState.CONNECTING
        self.sent: list[dict[str, Any]] = []

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        self.application_state = WebSocketState.CONNECTED

    async def send(self, message: Any) -> None:
        self.sent.append(dict(message))

    async def receive(self) -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    def frames(self) -> list[Any]:
        return [json.loads(m["text"]) for m in self.sent if m["type"] == "websocket.send"]


class SlowFirstSubscribe(MemoryBackend):
    """SUBSCRIBE takes a round trip; the first one until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release, self.calls = anyio.Event(), 0

    async def subscribe(self, channel: str) -> None:
        self.calls += 1
        await super().subscribe(channel)
        if self.calls == 1:
            await self.release.wait()


class FlakyHistory(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    async def history(
        self, channel: str, since: int, epoch: str | None = None
    ) -> list[Publication]:
        if self.failures:
            self.failures -= 1
            raise BackendUnavailable("redis blip")
        return await super().history(channel, since, epoch)


async def test_a_member_that_joins_and_leaves_during_a_slow_subscribe_unsubscribes_nothing() -> (
    None
):
    backend = SlowFirstSubscribe()
    async with RoomManager(backend=backend) as rooms:
        a, b = Peer(), Peer()
        async with rooms.connect(a) as conn_a, rooms.connect(b) as conn_b:
            async with anyio.create_task_group() as tg:
                tg.start_soon(rooms.join, conn_a, "r")  # its SUBSCRIBE is still in flight
                await await_for(lambda: backend.calls == 1, what="the first subscribe")
                await rooms.join(conn_b, "r")
                await rooms.leave(conn_b, "r")  # must not unsubscribe: a is still a member
                backend.release.set()
            await rooms.publish("r", "hello")
            await await_for(lambda: a.frames() != [], what="the publication to reach a")
    (frame,) = a.frames()
    assert frame == {"room": "r", "seq": 1, "epoch": frame["epoch"], "data": "hello"}


async def test_a_join_that_failed_part_way_can_be_retried() -> None:
    async with RoomManager(backend=FlakyHistory()) as rooms:
        peer = Peer()
        async with rooms.connect(peer) as conn:
            await rooms.publish("r", "old")
            with pytest.raises(BackendUnavailable):
                await rooms.join(conn, "r", since=0)
            assert conn not in rooms.members("r")  # nothing half-joined is left behind
            await rooms.join(conn, "r", since=0)
            await rooms.publish("r", "live")
            await await_for(lambda: len(peer.frames()) == 2, what="history, then live")
    assert [f["data"] for f in peer.frames()] == ["old", "live"]


async def test_announce_comes_before_anything_after_the_announced_seq() -> None:
    async with RoomManager() as rooms:
        first, second = Peer(), Peer()
        async with rooms.connect(first) as conn_first, rooms.connect(second) as conn_second:
            await rooms.join(conn_first, "r")
            await rooms.publish("r", "before")  # numbered, maybe not yet fanned out
            await rooms.join(conn_second, "r", announce=True)
            await rooms.publish("r", "after")
            await await_for(lambda: len(second.frames()) == 2, what="joined, then 'after'")
    joined, after = second.frames()
    assert (joined["type"], joined["seq"]) == ("joined", 1)
    assert (after["seq"], after["data"]) == (2, "after")  # nothing at or below 1 follows
