"""Redis and network faults under steady traffic, two workers, members that stay connected.

Each test breaks something an unlucky production day breaks, repairs it, and asserts for
every member: no duplicates, order kept, every applied publication delivered or covered by
a ``recovery_failed`` naming the new position, live delivery back (the time it took is
printed as the scenario's row), and a publisher told the truth. The heaviest faults run
once each; the rows are the issue's table.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time

import pytest

from .._poll import await_for
from .._redis import RedisServer
from ._cluster import Publisher, Workers
from ._proxy import FaultProxy
from ._scenario import Scenario, run
from ._verdict import Verdict

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]

# Where history is lost, the room is first brought to seq 200: a new epoch restarts at 1,
# and a member must not wait for the new numbering to pass the old one.
PRIME = 200
OUTAGE_ERRORS = 3  # an outage lasts until the publisher was refused this many times
LISTENER_LOST = "backplane listener lost Redis"  # RedisBackend's warning


def _errors_after(publisher: Publisher, first: int) -> int:
    return sum(1 for o in publisher.outcomes[first:] if o.done and not o.ok)


async def _until_refused(publisher: Publisher, count: int = OUTAGE_ERRORS) -> None:
    """Hold the fault until the publisher has felt it ``count`` times (at most 20 s)."""
    first = len(publisher.outcomes)
    await await_for(lambda: _errors_after(publisher, first) >= count, 20, "publishes to fail")


def _app_failed(publisher: Publisher) -> bool:
    """The app's publish itself failed (HTTP 500): the log and the verdict will say why."""
    return any(str(o.error).startswith("HTTP") for o in publisher.outcomes)


def _passed(verdict: Verdict) -> None:
    """Fail with the scenario's row and its problems, one line per kind of problem."""
    kinds: dict[str, list[str]] = {}
    for problem in verdict.problems:
        kinds.setdefault(re.sub(r"\d+", "N", problem)[:80], []).append(problem)
    lines = [f"{p[0]}" + (f"  (and {len(p) - 1} more like it)" if len(p) > 1 else "")
             for p in kinds.values()]  # fmt: skip
    if verdict.problems:
        pytest.fail("\n".join([verdict.row(), *lines]), pytrace=False)


async def _crash_and_restart(s: Scenario, redis_server: RedisServer, sig: signal.Signals) -> float:
    await asyncio.to_thread(_kill, redis_server, sig)
    await _until_refused(s.publisher)
    await asyncio.to_thread(redis_server.start)  # same port, no persistence: a new epoch
    return time.monotonic()


def _kill(redis_server: RedisServer, sig: signal.Signals) -> None:
    assert redis_server.proc is not None
    redis_server.proc.send_signal(sig)
    redis_server.proc.wait(10)
    redis_server.proc = None


def test_redis_sigkill_and_restart(workers: Workers, redis_server: RedisServer) -> None:
    async def fault(s: Scenario) -> float:
        return await _crash_and_restart(s, redis_server, signal.SIGKILL)

    _passed(asyncio.run(run(workers, fault, "SIGKILL + restart", prime=PRIME)))


def test_redis_sigterm_and_restart(workers: Workers, redis_server: RedisServer) -> None:
    async def fault(s: Scenario) -> float:
        return await _crash_and_restart(s, redis_server, signal.SIGTERM)

    _passed(asyncio.run(run(workers, fault, "SIGTERM + restart", prime=PRIME)))


def test_redis_flaps(workers: Workers, redis_server: RedisServer) -> None:
    async def fault(s: Scenario) -> float:
        await _crash_and_restart(s, redis_server, signal.SIGKILL)
        first = len(s.publisher.outcomes)
        await await_for(lambda: s.publisher.ok_count() > first + 5 and s.live_after(first), 20,
                        "a few publications in the new epoch")  # fmt: skip
        return await _crash_and_restart(s, redis_server, signal.SIGKILL)

    _passed(asyncio.run(run(workers, fault, "SIGKILL + restart, twice", prime=PRIME)))


def test_redis_frozen_by_sigstop(workers: Workers, redis_server: RedisServer) -> None:
    async def fault(s: Scenario) -> float:
        redis_server.pause()
        try:
            await _until_refused(s.publisher)  # publishes timed out against a frozen Redis
        finally:
            redis_server.resume()
        return time.monotonic()

    _passed(asyncio.run(run(workers, fault, "SIGSTOP / SIGCONT")))


@pytest.mark.parametrize("kind", ["pubsub", "normal"])
def test_redis_kills_clients(workers: Workers, redis_server: RedisServer, kind: str) -> None:
    async def fault(s: Scenario) -> float:
        killed = await asyncio.to_thread(redis_server.command, "CLIENT", "KILL", "TYPE", kind)
        assert killed >= 2, f"CLIENT KILL TYPE {kind} killed {killed} clients"
        return time.monotonic()

    _passed(asyncio.run(run(workers, fault, f"CLIENT KILL TYPE {kind}")))


def test_redis_kills_a_listener_over_its_output_buffer(
    workers: Workers, redis_server: RedisServer
) -> None:
    channel = []

    def listeners() -> int:
        return int(redis_server.command("PUBSUB", "NUMSUB", channel[0])[1])

    async def fault(s: Scenario) -> float:
        channel.append(f"asgi_rt:pub:{s.room}")
        limit = "client-output-buffer-limit"
        default = next(iter(redis_server.command("CONFIG", "GET", limit).values()))
        redis_server.command("CONFIG", "SET", limit, "pubsub 1kb 1kb 0")
        try:
            s.publisher.pads.extend([40_000] * 3)  # each over the limit on its own
            await await_for(lambda: listeners() < 2, 20, "Redis to kill the listeners")
        finally:
            redis_server.command("CONFIG", "SET", limit, default)
        return time.monotonic()

    _passed(asyncio.run(run(workers, fault, "output-buffer-limit kill")))


def test_redis_flushall_loses_history_while_up(workers: Workers, redis_server: RedisServer) -> None:
    async def fault(s: Scenario) -> float:
        await asyncio.to_thread(redis_server.command, "FLUSHALL")
        return time.monotonic()

    _passed(asyncio.run(run(workers, fault, "FLUSHALL", prime=PRIME)))


def test_redis_frozen_while_the_publisher_retries_with_a_key(
    workers: Workers, redis_server: RedisServer
) -> None:
    async def fault(s: Scenario) -> float:
        s.publisher.retry = True  # every publish carries an idempotency key from now on
        redis_server.pause()
        try:
            await await_for(lambda: any(o.retried for o in s.publisher.outcomes), 20, "a retry")
        finally:
            redis_server.resume()
        return time.monotonic()

    _passed(asyncio.run(run(workers, fault, "SIGSTOP, publisher retries with key")))


@pytest.mark.parametrize("retry", [False, True], ids=["told", "retried-with-key"])
def test_network_cuts_the_reply_of_an_applied_publish(
    proxied_workers: Workers, proxy: FaultProxy, retry: bool
) -> None:
    async def fault(s: Scenario) -> float:
        s.publisher.retry = retry
        proxy.cut_reply(b"EVALSHA")  # the publish's script call reaches Redis, its reply not
        await await_for(lambda: proxy.cut.is_set() or _app_failed(s.publisher), 20, "the cut")
        return time.monotonic()

    name = "proxy: reply of an applied publish cut" + (", retried with key" * retry)
    _passed(asyncio.run(run(proxied_workers, fault, name)))


def test_network_latency(proxied_workers: Workers, proxy: FaultProxy) -> None:
    async def fault(s: Scenario) -> float:
        proxy.set_mode("latency", latency=0.05)
        first = len(s.publisher.outcomes)
        await await_for(lambda: len(s.publisher.outcomes) >= first + 20, 30, "slow publishes")
        proxy.set_mode("pass")
        return time.monotonic()

    _passed(asyncio.run(run(proxied_workers, fault, "proxy: +50 ms per chunk")))


def test_network_partition_without_reset(proxied_workers: Workers, proxy: FaultProxy) -> None:
    async def fault(s: Scenario) -> float:
        proxy.set_mode("blackhole")
        try:
            await _until_refused(s.publisher)  # publishes timed out into the partition
        finally:
            proxy.set_mode("pass")
        return time.monotonic()

    _passed(asyncio.run(run(proxied_workers, fault, "proxy: blackhole")))


def test_network_partition_outlasting_the_listeners(
    proxied_workers: Workers, proxy: FaultProxy
) -> None:
    def gave_up() -> bool:
        return all(LISTENER_LOST in log.read_text() for log in proxied_workers.logs)

    async def fault(s: Scenario) -> float:
        proxy.set_mode("blackhole")
        try:  # until both listeners found their connections dead (no PONG) and said so
            await await_for(gave_up, 30, "both listeners to give up their connections")
        finally:
            proxy.set_mode("pass")
        return time.monotonic()

    _passed(asyncio.run(run(proxied_workers, fault, "proxy: blackhole past the ping timeout")))


def test_network_resets_mid_command(proxied_workers: Workers, proxy: FaultProxy) -> None:
    async def fault(s: Scenario) -> float:
        reset = proxy.reset()
        assert reset >= 4, f"only {reset} connections to reset"  # 2 listeners, 2 pools
        return time.monotonic()

    _passed(asyncio.run(run(proxied_workers, fault, "proxy: RST all")))


def test_redis_unreachable(proxied_workers: Workers, proxy: FaultProxy) -> None:
    async def fault(s: Scenario) -> float:
        proxy.refuse()
        proxy.reset()
        try:
            await _until_refused(s.publisher)
        finally:
            proxy.refuse(False)
        return time.monotonic()

    _passed(asyncio.run(run(proxied_workers, fault, "proxy: RST + refuse")))
