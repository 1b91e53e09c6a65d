"""One unlucky production day, scripted: members on both workers, a steady publisher, a
fault, and a verdict on what everyone saw.

``run(workers, fault, name)`` connects two members to each worker, publishes every 20 ms
through the first worker, waits for live traffic, awaits ``fault()`` (which breaks
Redis or the network, repairs it, and returns the ``time.monotonic()`` at which Redis was
usable again), waits until every member gets live publications again (recording how
long that took), publishes a little longer, stops, lets the last publications arrive,
and judges.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from .._poll import await_for
from ._cluster import Member, Publisher, Workers
from ._verdict import Verdict, judge

__all__ = ["MEMBERS_PER_WORKER", "Scenario", "run"]

MEMBERS_PER_WORKER = 2
RESUME_DEADLINE = 20.0  # s to wait for live delivery before calling it "never"
# The contract says 1 s after Redis is usable; the assertion is generous for a loaded
# machine, and every scenario prints what it measured.
RESUME_BOUND = 10.0
Fault = Callable[["Scenario"], Awaitable[float]]


class Scenario:
    """What a fault sees of the scenario it runs in."""

    def __init__(self, workers: Workers, room: str) -> None:
        self.workers = workers
        self.room = room
        self.publisher = Publisher(workers.ports[0], room)
        self.members = [Member(f"member-{i}@{port}", port, room)
                        for port in workers.ports for i in range(MEMBERS_PER_WORKER)]  # fmt: skip

    def live_after(self, n: int) -> bool:
        """Every member has received a publication numbered ``n`` or later."""
        return all(max(m.numbers(), default=0) >= n for m in self.members)


async def run(workers: Workers, fault: Fault, name: str, *, prime: int = 0) -> Verdict:
    """Run one scenario; ``prime`` publishes go out back to back before the steady rate."""
    scenario = Scenario(workers, f"room-{uuid.uuid4().hex[:8]}")
    scenario.publisher.prime = prime
    for member in scenario.members:
        await member.join()
    publishing = asyncio.ensure_future(scenario.publisher.run())
    try:
        await await_for(lambda: scenario.live_after(prime + 25), 30, "live traffic first")
        usable = await fault(scenario)
        resumed = await _resumed(scenario, usable)
        more = len(scenario.publisher.outcomes) + 50  # one more second of steady publishing
        await await_for(lambda: len(scenario.publisher.outcomes) >= more, 30, "more publishes")
    finally:
        scenario.publisher.stopping = True
        await asyncio.wait_for(publishing, 30)
    await _settle(scenario)
    closed = [(m.name, await m.leave()) for m in scenario.members]
    verdict = judge(name, scenario.members, scenario.publisher.outcomes)
    verdict.resumed = resumed
    verdict.problems += [f"{who} was closed by the server: {how}" for who, how in closed if how]
    if resumed is None or resumed > RESUME_BOUND:
        verdict.problems.append(f"live delivery did not resume within {RESUME_BOUND} s")
    _judge_log(workers.log_text(), verdict)
    print(f"\nfault row: {verdict.row()}")
    return verdict


async def _resumed(scenario: Scenario, usable: float) -> float | None:
    """Seconds from ``usable`` until every member got a publication sent after it."""
    first = next(
        (o.n for o in scenario.publisher.outcomes if o.sent >= usable),
        len(scenario.publisher.outcomes) + 1,
    )
    try:
        await await_for(lambda: scenario.live_after(first), RESUME_DEADLINE, "live delivery")
    except AssertionError:
        return None
    arrivals = [
        next(t for t, f in m.room_frames() if _number(f) >= first) for m in scenario.members
    ]
    return max(arrivals) - usable


def _number(frame: dict[str, Any]) -> int:
    data = frame["data"]
    return int(data["n"]) if isinstance(data, dict) else 0


async def _settle(scenario: Scenario) -> None:
    """Wait until the frame counts stop moving for half a second (at most 10 s)."""
    counts = [-1]
    quiet_since = [time.monotonic()]

    def quiet() -> bool:
        now, total = time.monotonic(), sum(len(m.frames) for m in scenario.members)
        if total != counts[0]:
            counts[0], quiet_since[0] = total, now
        return now - quiet_since[0] >= 0.5

    await await_for(quiet, 10, "the last publications to arrive", interval=0.05)


def _judge_log(log: str, verdict: Verdict) -> None:
    """Every traceback in the workers' logs is a problem; name each by its last line."""
    if "Exception in ASGI application" in log:
        verdict.problems.append("worker log has 'Exception in ASGI application'")
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            end = next((j for j in range(i + 1, len(lines)) if not lines[j].startswith(" ")), i)
            verdict.problems.append(f"worker log has a traceback ending {lines[end]!r}")
