"""NATS JetStream faults under steady traffic: the scenarios of the Redis backplane that
apply (``test_backplane.py``'s harness: two workers, members that stay connected, a
steady publisher, a verdict on what everyone saw), on ``nats://``.

A restart keeps JetStream's store on disk, so members get everything they missed under
the same epoch; a restart with the store wiped loses history, so the rooms start a new
epoch and members are told with ``recovery_failed``.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .._nats import NatsServer
from .._poll import await_for
from ._cluster import Workers
from ._proxy import FaultProxy
from ._scenario import Scenario, run
from .test_backplane import PRIME, _passed, _until_refused

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh nats-server per scenario: its store is restarted or wiped."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nats_workers(nats: NatsServer, tmp_path: Path) -> Iterator[Workers]:
    running = Workers(nats.url, tmp_path)
    yield running
    running.stop()


async def _crash_and_restart(s: Scenario, nats: NatsServer, *, wipe: bool) -> float:
    await asyncio.to_thread(nats.stop, signal.SIGKILL)
    await _until_refused(s.publisher)
    await asyncio.to_thread(nats.restart, wipe=wipe)  # same port; stopped already
    return time.monotonic()


def test_nats_sigkill_and_restart_keeps_history(nats_workers: Workers, nats: NatsServer) -> None:
    async def fault(s: Scenario) -> float:
        return await _crash_and_restart(s, nats, wipe=False)

    verdict = asyncio.run(run(nats_workers, fault, "nats: SIGKILL + restart", prime=PRIME))
    _passed(verdict)


def test_nats_restart_with_the_store_wiped_starts_a_new_epoch(
    nats_workers: Workers, nats: NatsServer
) -> None:
    async def fault(s: Scenario) -> float:
        return await _crash_and_restart(s, nats, wipe=True)

    verdict = asyncio.run(run(nats_workers, fault, "nats: SIGKILL + wiped store", prime=PRIME))
    _passed(verdict)


@pytest.fixture
def nats_proxy(nats: NatsServer) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(nats.port)
    fault_proxy.start()
    yield fault_proxy
    fault_proxy.stop()


def test_nats_network_partition_and_resets(nats_proxy: FaultProxy, tmp_path: Path) -> None:
    workers = Workers(f"nats://127.0.0.1:{nats_proxy.port}", tmp_path)

    async def fault(s: Scenario) -> float:
        nats_proxy.set_mode("blackhole")
        try:
            await _until_refused(s.publisher)  # acks cannot come back: outcome unknown
        finally:
            nats_proxy.set_mode("pass")
        nats_proxy.reset()
        return time.monotonic()

    try:
        _passed(asyncio.run(run(workers, fault, "nats proxy: blackhole + RST")))
    finally:
        workers.stop()


def test_nats_reply_of_a_publish_cut_and_retried_with_its_key(
    nats_proxy: FaultProxy, tmp_path: Path
) -> None:
    workers = Workers(f"nats://127.0.0.1:{nats_proxy.port}", tmp_path)

    async def fault(s: Scenario) -> float:
        s.publisher.retry = True  # every publish carries an idempotency key from now on
        nats_proxy.cut_reply(b"HPUB asgi_rt.in.")  # the publish reaches the server, then RST
        await await_for(lambda: nats_proxy.cut.is_set(), 20, "the cut")
        return time.monotonic()

    try:
        _passed(asyncio.run(run(workers, fault, "nats proxy: publish cut, retried with key")))
    finally:
        workers.stop()


def test_nats_publish_whose_position_read_fails_says_not_applied(nats_proxy: FaultProxy) -> None:
    """A publish to a room this process has not numbered yet reads the room's last message
    first; when that read fails (a partition the listener has not noticed yet), nothing was
    stored, so the publisher must hear ``PublishNotApplied`` (safe to retry), never a bare
    ``BackendUnavailable`` that says neither (seen once in the partition scenario above)."""
    from asgi_rt.backends.nats import NatsBackend
    from asgi_rt.exceptions import PublishNotApplied

    async def scenario() -> BaseException | None:
        url = f"nats://127.0.0.1:{nats_proxy.port}"
        async with NatsBackend(url, prefix="unread", publish_timeout=0.5) as backend:
            await backend.publish("warm", b"x")  # streams exist, the listener is up
            nats_proxy.set_mode("blackhole")
            try:
                await backend.publish("never-read", b"y")
            except Exception as exc:
                return exc
            finally:
                nats_proxy.set_mode("pass")
        return None

    error = asyncio.run(scenario())
    assert isinstance(error, PublishNotApplied), f"the publisher was told {error!r}"
    assert "not applied" in str(error)
