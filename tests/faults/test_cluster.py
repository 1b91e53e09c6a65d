"""The fault table's restart row on a 3-master Redis Cluster: the master that owns the
scenario's room crashes (SIGKILL) and restarts empty on its port, under steady traffic,
two workers on ``redis-cluster://``. The same verdict as on one Redis: no duplicates,
order kept, every applied publication delivered or covered by ``recovery_failed``, live
delivery back, and a publisher told the truth."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .._redis_cluster import RedisClusterServers
from ._cluster import Workers
from ._scenario import Scenario, run
from .test_backplane import PRIME, _kill, _passed, _until_refused

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]


@pytest.fixture
def cluster_workers(redis_cluster: RedisClusterServers, tmp_path: Path) -> Iterator[Workers]:
    """Two workers on the session's cluster."""
    running = Workers(redis_cluster.url, tmp_path)
    yield running
    running.stop()


def test_the_rooms_master_sigkill_and_restart(
    cluster_workers: Workers, redis_cluster: RedisClusterServers
) -> None:
    async def fault(s: Scenario) -> float:
        owner = redis_cluster.owner_of(f"asgi_rt:{{{s.room}}}:seq")
        await asyncio.to_thread(_kill, owner, signal.SIGKILL)
        await _until_refused(s.publisher)
        await asyncio.to_thread(owner.start)  # same port and node id, no data: a new epoch
        await asyncio.to_thread(redis_cluster.wait_ok)
        return time.monotonic()

    try:
        _passed(asyncio.run(run(cluster_workers, fault, "cluster: master SIGKILL + restart",
                                prime=PRIME)))  # fmt: skip
    finally:
        redis_cluster.wait_ok()  # the next test gets a whole cluster
