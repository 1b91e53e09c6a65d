"""NatsBackend against a real nats-server with JetStream: outages, restarts with and
without the store, rooms named like subjects, publishers racing for the same numbers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from asgi_rt.backends import HistoryGap, Publication, PublishNotApplied, Resync, make_backend
from asgi_rt.backends.nats import NatsBackend

from .._nats import NatsServer
from .._poll import await_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fresh_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A server of this test's own: it is stopped, restarted, wiped."""
    server = NatsServer(tmp_path)
    server.start()
    yield server
    server.stop()


async def _items(backend: NatsBackend, count: int) -> list[Publication | Resync]:
    out: list[Publication | Resync] = []
    iterator = backend.publications()
    while len(out) < count:
        out.append(await asyncio.wait_for(iterator.__anext__(), 10))
    return out


async def test_make_backend_picks_nats_by_url(nats_server: NatsServer) -> None:
    backend = make_backend(nats_server.url, history_size=7)
    assert isinstance(backend, NatsBackend)
    async with backend:
        assert (await backend.publish("room", b"x")).seq == 1


async def test_rooms_named_like_subjects_stay_apart(nats_server: NatsServer) -> None:
    names = ["a.b", "a.*", ">", "a", "", "ünï cødé ☃", "a b\tc"]
    async with NatsBackend(nats_server.url, prefix="names") as backend:
        await backend.subscribe("a.b")
        for name in names:
            await backend.publish(name, name.encode())
        got = await _items(backend, 1)
        assert got == [Publication("a.b", 1, got[0].epoch, b"a.b")]  # type: ignore[union-attr]
        for name in names:
            (kept,) = await backend.history(name, 0)
            assert (kept.channel, kept.seq, kept.data) == (name, 1, name.encode())


async def test_racing_publishers_get_every_number_once(nats_server: NatsServer) -> None:
    async with (
        NatsBackend(nats_server.url, prefix="race") as one,
        NatsBackend(nats_server.url, prefix="race") as two,
    ):
        await one.subscribe("room")
        sent = await asyncio.gather(*(b.publish("room", f"{i}".encode())
                                      for i in range(40) for b in (one, two)))  # fmt: skip
        got = await _items(one, 80)
    assert sorted(p.seq for p in sent) == list(range(1, 81))
    assert [p.seq for p in got if isinstance(p, Publication)] == list(range(1, 81))
    assert {p.data for p in got if isinstance(p, Publication)} == {p.data for p in sent}


async def test_an_outage_fails_publishes_fast_and_a_restart_keeps_the_room(
    fresh_nats: NatsServer,
) -> None:
    async with NatsBackend(fresh_nats.url, prefix="keep") as backend:
        await backend.subscribe("room")
        before = await backend.publish("room", b"before")
        await _items(backend, 1)
        fresh_nats.stop()
        await await_for(lambda: not backend.listener_up, what="the outage to be seen")
        with pytest.raises(PublishNotApplied, match="not connected to NATS"):
            await backend.publish("room", b"during the outage")
        fresh_nats.start()
        assert await _items(backend, 1) == [Resync(("room",))]
        after = await backend.publish("room", b"after")
        assert (after.seq, after.epoch) == (2, before.epoch)  # the store survived
        assert [p.data for p in await backend.history("room", 0, before.epoch)] == [
            b"before", b"after"
        ]  # fmt: skip


async def test_a_restart_with_the_store_wiped_starts_a_new_epoch(fresh_nats: NatsServer) -> None:
    async with NatsBackend(fresh_nats.url, prefix="wipe") as backend:
        await backend.subscribe("room")
        before = await backend.publish("room", b"before")
        fresh_nats.restart(wipe=True)
        assert (await _items(backend, 2))[1] == Resync(("room",))
        after = await backend.publish("room", b"after")
        assert after.seq == 1 and after.epoch != before.epoch
        with pytest.raises(HistoryGap) as gap:
            await backend.history("room", before.seq, epoch=before.epoch)
        assert gap.value.reason == "epoch changed"
        assert (await _items(backend, 1))[0] == after


async def test_workers_opening_a_room_at_once_agree_on_its_epoch(nats_server: NatsServer) -> None:
    async with (
        NatsBackend(nats_server.url, prefix="open") as one,
        NatsBackend(nats_server.url, prefix="open") as two,
    ):
        for i in range(10):
            joined = await asyncio.gather(one.position(f"j{i}"), two.position(f"j{i}"))
            assert joined[0] == joined[1], joined
            sent = await asyncio.gather(one.publish(f"p{i}", b"a"), two.publish(f"p{i}", b"b"))
            assert sorted(p.seq for p in sent) == [1, 2] and sent[0].epoch == sent[1].epoch
