"""MemoryBackend's bounds: idle rooms are forgotten, and the number of rooms is capped."""

from __future__ import annotations

import pytest

from asgi_rt.backends import HistoryGap, MemoryBackend

pytestmark = pytest.mark.anyio


async def test_rooms_without_members_are_forgotten_after_room_ttl() -> None:
    now = [0.0]
    async with MemoryBackend(room_ttl=60, clock=lambda: now[0]) as backend:
        await backend.subscribe("kept")
        old = await backend.publish("gone", b"x")
        await backend.publish("kept", b"x")
        now[0] += 61
        await backend.publish("new", b"x")  # making a room sweeps the idle ones
        assert backend.rooms_held == 2  # "kept" has a subscriber, "new" was just used
        with pytest.raises(HistoryGap) as gap:
            await backend.history("gone", 1, epoch=old.epoch)
        assert gap.value.reason == "epoch changed"  # a resume is told, not misled
        again = await backend.publish("gone", b"y")
        assert (again.seq, again.epoch != old.epoch) == (1, True)


async def test_the_number_of_rooms_is_capped_least_recently_used_first() -> None:
    async with MemoryBackend(max_rooms=100) as backend:
        for i in range(50_000):
            await backend.publish(f"room-{i}", b"3 messages, once")
        assert backend.rooms_held == 100
        assert (await backend.position("room-49999"))[0] == 1
        assert (await backend.position("room-0"))[0] == 0  # forgotten: starts again


def test_bounds_are_validated() -> None:
    with pytest.raises(ValueError, match="room_ttl"):
        MemoryBackend(room_ttl=0)
    with pytest.raises(ValueError, match="max_rooms"):
        MemoryBackend(max_rooms=0)
