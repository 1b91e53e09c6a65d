"""NATS JetStream backplane at scale: what the server sends out per publish.

    python -m bench.nats_scale            # N in 2, 4, 8 workers; R in 10 .. 10,000 rooms
    python -m bench.nats_scale --quick    # N in 2, 4; R in 10, 1000

One nats-server with JetStream of our own (``bench._nats``). For every (N, R): N worker
processes (``bench._nats_scale_worker``), room ``i`` on worker ``i % N``, each holding one
NatsBackend subscription per room it has (``rooms`` mode), then the same with every worker
on one wildcard subscription (``broadcast`` mode: what a backplane without per-room routing,
like a plain Redis ``PUBLISH`` to one channel for everything, costs). A publisher publishes
one publication to every room, then ``--publishes`` more to rooms drawn at random (16 in
flight), the measured ones. Reported per publish:
messages the server sent out (``out_msgs`` of ``/varz``, which includes the JetStream ack
to the publisher) and publications the workers received. With per-room subjects both stay
flat as N and R grow; with broadcast the deliveries grow with every worker.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import time
import uuid
from typing import Any

from asgi_rt.backends.nats import NatsBackend

from ._nats import NatsServer
from ._report import write_json


class Worker:
    def __init__(self, url: str, prefix: str, index: int, n: int, rooms: int, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench._nats_scale_worker", url, prefix, str(index), str(n),
             str(rooms), mode],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def ready(self) -> None:
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("a scale worker did not start")

    def count(self) -> int:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


async def publish_all(
    nats: NatsServer, prefix: str, rooms: int, publishes: int
) -> tuple[float, dict[str, Any]]:
    """Publish once to every room (so that the publisher knows every room's position, as a
    long-running worker does), then ``publishes`` times at random; (publishes/s, varz
    before the measured ones)."""
    rng = random.Random(1)
    targets = [f"room-{rng.randrange(rooms)}" for _ in range(publishes)]
    async with NatsBackend(nats.url, prefix=prefix, history_size=10) as backend:
        gate = asyncio.Semaphore(16)

        async def one(room: str) -> None:
            async with gate:
                await backend.publish(room, b"x" * 100)

        await asyncio.gather(*(one(f"room-{r}") for r in range(rooms)))
        before = nats.varz()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(r) for r in targets))
        return publishes / (time.perf_counter() - t0), before


def point(nats: NatsServer, n: int, rooms: int, mode: str, publishes: int) -> dict[str, Any]:
    prefix = f"s{uuid.uuid4().hex[:8]}"
    workers = [Worker(nats.url, prefix, i, n, rooms, mode) for i in range(n)]
    try:
        for worker in workers:
            worker.ready()
        rate, before = asyncio.run(publish_all(nats, prefix, rooms, publishes))
        expected = (rooms + publishes) * (n if mode == "broadcast" else 1)
        deadline = time.monotonic() + 30
        while sum(w.count() for w in workers) < expected and time.monotonic() < deadline:
            time.sleep(0.05)  # poll interval, bounded by the deadline
        after = nats.varz()
        received = sum(w.count() for w in workers) - rooms * (n if mode == "broadcast" else 1)
    finally:
        for worker in workers:
            worker.stop()
    return {
        "workers": n, "rooms": rooms, "mode": mode, "publishes": publishes,
        "publishes_per_s": rate,
        "server_out_per_publish": (after["out_msgs"] - before["out_msgs"]) / publishes,
        "worker_deliveries_per_publish": received / publishes,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.nats_scale", description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--publishes", type=int, default=500)
    a = p.parse_args(argv)
    sizes = [(n, r) for n in ((2, 4) if a.quick else (2, 4, 8))
             for r in ((10, 1000) if a.quick else (10, 100, 1000, 10_000))]  # fmt: skip
    rows = []
    with NatsServer() as nats:
        version = nats.varz().get("version", "?")
        for n, rooms in sizes:
            for mode in ("rooms", "broadcast"):
                row = point(nats, n, rooms, mode, a.publishes)
                rows.append(row)
                print(f"N={n:<2} R={rooms:<6} {mode:<9} server out/publish "
                      f"{row['server_out_per_publish']:.2f}, worker deliveries/publish "
                      f"{row['worker_deliveries_per_publish']:.2f}, "
                      f"{row['publishes_per_s']:.0f} publishes/s", flush=True)  # fmt: skip
    print(f"\nnats-server {version}: per publish, server messages out (incl. the JetStream ack)")
    print(f"{'N':>3} {'R':>7} {'per-room subjects':>18} {'broadcast':>10} {'ratio':>6}")
    for n, rooms in sizes:
        pr, bc = (next(r for r in rows if (r["workers"], r["rooms"], r["mode"]) == (n, rooms, m))
                  for m in ("rooms", "broadcast"))  # fmt: skip
        ratio = bc["server_out_per_publish"] / pr["server_out_per_publish"]
        print(f"{n:>3} {rooms:>7} {pr['server_out_per_publish']:>18.2f} "
              f"{bc['server_out_per_publish']:>10.2f} {ratio:>5.2f}x")  # fmt: skip
    write_json("nats_scale.json", {"nats_version": version, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
