"""One worker of ``bench.nats_scale``: subscribes to its share of the rooms and counts.

``python -m bench._nats_scale_worker URL PREFIX INDEX WORKERS ROOMS MODE``: room ``i`` is
this worker's when ``i % WORKERS == INDEX``. ``MODE`` ``rooms`` is NatsBackend (one core
subscription per room); ``broadcast`` is one wildcard subscription to every room's live
subject, what a backplane without per-room routing does (every worker hears every room).
Prints ``ready`` once subscribed, then answers each ``count`` line on stdin with the
number of publications received so far; exits on EOF.
"""

from __future__ import annotations

import asyncio
import sys

import nats

from asgi_rt.backends.nats import NatsBackend


async def main(url: str, prefix: str, index: int, workers: int, rooms: int, mode: str) -> None:
    received = 0
    if mode == "broadcast":
        nc = await nats.connect(url)

        async def count(msg: object) -> None:
            nonlocal received
            received += 1

        await nc.subscribe(f"{prefix}.live.>", cb=count)
        await nc.flush()
        await serve(lambda: received)
        await nc.close()
        return
    async with NatsBackend(url, prefix=prefix, history_size=10) as backend:
        for room in range(index, rooms, workers):
            await backend.subscribe(f"room-{room}")

        async def drain() -> None:
            nonlocal received
            async for _ in backend.publications():
                received += 1

        task = asyncio.create_task(drain())
        await serve(lambda: received)
        task.cancel()


async def serve(count: object) -> None:
    assert callable(count)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.strip() == "count":
            print(count(), flush=True)


if __name__ == "__main__":
    url, prefix, index, workers, rooms, mode = sys.argv[1:7]
    asyncio.run(main(url, prefix, int(index), int(workers), int(rooms), mode))
