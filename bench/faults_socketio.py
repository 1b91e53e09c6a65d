"""python-socketio's AsyncRedisManager under a Redis SIGKILL + restart: the comparison row
of the asgi_rt fault suite (``tests/faults``), measured the same way.

Two uvicorn workers of ``bench._faults_socketio_app`` on our own redis-server; members
connected to both for the whole run (Engine.IO v4 over a plain ``websockets`` client); a
publisher POSTing ``{"n": 1, 2, ...}`` every 20 ms to the first worker, recording what it
was told. Per round: live traffic, SIGKILL Redis, 1 s down, restart on the same port, 3 s
more. Printed per round: publications the publisher was told succeeded that a member
never got (lost), duplicates, publications signalled to members (Socket.IO has no such
frame), time from Redis accepting commands again until every member got a publication
sent after that, and the workers' "giving up" log lines (the only trace of a failed emit).

Run with ``python -m bench.faults_socketio [--rounds N] [--members-per-worker N]``.
Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

from .rooms import RedisServer

ROOT = Path(__file__).resolve().parents[1]
INTERVAL = 0.02


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Member:
    """An Engine.IO v4 / Socket.IO client in room ``r``: records the ``n`` of every ``msg``."""

    def __init__(self, port: int) -> None:
        self.url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        self.got: list[tuple[float, int]] = []
        self.task: asyncio.Task[None] | None = None
        self.ws: Any = None

    async def connect(self) -> None:
        self.ws = await websockets.connect(self.url, max_size=None)
        assert (await self.ws.recv()).startswith("0")  # Engine.IO open
        await self.ws.send("40")  # Socket.IO CONNECT to "/"
        assert (await self.ws.recv()).startswith("40")
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for packet in self.ws:
                if packet == "2":
                    await self.ws.send("3")  # Engine.IO pong
                elif packet.startswith("42"):
                    event, data = json.loads(packet[2:])
                    if event == "msg":
                        self.got.append((time.monotonic(), int(data["n"])))

    async def close(self) -> None:
        await self.ws.close()
        if self.task is not None:
            await self.task


class Publisher:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/publish"
        self.told: list[tuple[float, str]] = []  # (sent at, "ok" | error)
        self.stopping = False

    async def run(self) -> None:
        next_at = time.monotonic()
        async with httpx.AsyncClient(timeout=15) as client:
            while not self.stopping:
                sent = time.monotonic()
                n = len(self.told) + 1
                self.told.append((sent, "pending"))
                try:
                    answer = (await client.post(self.url, json={"n": n})).json()
                    told = "ok" if answer["ok"] else answer["error"]
                except (httpx.HTTPError, ValueError) as exc:
                    told = f"no answer ({type(exc).__name__})"
                self.told[n - 1] = (sent, told)
                next_at = max(next_at + INTERVAL, time.monotonic())
                await asyncio.sleep(next_at - time.monotonic())  # the publishing rate


async def _until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def _restart(redis: RedisServer) -> None:
    assert redis.proc is not None
    redis.proc.send_signal(signal.SIGKILL)
    redis.proc.wait(10)
    time.sleep(1.0)  # the outage itself
    redis.__enter__()  # same port and command; returns once PING answers


async def one_round(ports: list[int], redis: RedisServer, per_worker: int) -> dict[str, Any]:
    members = [Member(port) for port in ports for _ in range(per_worker)]
    for member in members:
        await member.connect()
    publisher = Publisher(ports[0])
    publishing = asyncio.ensure_future(publisher.run())
    await _until(lambda: all(len(m.got) >= 25 for m in members), 30)
    await asyncio.to_thread(_restart, redis)
    usable = time.monotonic()
    first = len(publisher.told) + 1
    resumed_ok = await _until(lambda: all(m.got and m.got[-1][1] >= first for m in members), 20)
    resumed = None
    if resumed_ok:
        resumed = max(next(t for t, n in m.got if n >= first) for m in members) - usable
    more = len(publisher.told) + 150
    await _until(lambda: len(publisher.told) >= more, 30)
    publisher.stopping = True
    await publishing
    last = len(publisher.told)
    await _until(lambda: all(m.got and m.got[-1][1] >= last for m in members), 5)
    for member in members:
        await member.close()
    return _figures(publisher, members, resumed)


def _figures(publisher: Publisher, members: list[Member], resumed: float | None) -> dict[str, Any]:
    ok = {n for n, (_, told) in enumerate(publisher.told, 1) if told == "ok"}
    lost_any = set()
    duplicated = 0
    for member in members:
        numbers = [n for _, n in member.got]
        duplicated += len(numbers) - len(set(numbers))
        lost_any |= ok - set(numbers)
    told: dict[str, int] = {}
    for _, answer in publisher.told:
        told[answer] = told.get(answer, 0) + 1
    return {"published": len(publisher.told), "told": told, "lost": len(lost_any),
            "lost_per_member": [len(ok - {n for _, n in m.got}) for m in members],
            "missing": [_ranges(sorted(ok - {n for _, n in m.got})) for m in members],
            "duplicated": duplicated, "signalled": 0,
            "resumed_s": None if resumed is None else round(resumed, 2)}  # fmt: skip


def _ranges(numbers: list[int]) -> str:
    """``[3, 4, 5, 9]`` as ``"3-5,9"``."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ",".join(f"{a}-{b}" if a != b else f"{a}" for a, b in spans)


async def main_async(rounds: int, per_worker: int) -> None:
    with RedisServer(cpu=None) as redis, tempfile.TemporaryDirectory() as logdir:
        ports = [_free_port(), _free_port()]
        logs = [Path(logdir) / f"worker-{p}.log" for p in ports]
        procs = [_spawn(port, redis.url, log) for port, log in zip(ports, logs, strict=True)]
        try:
            for port in ports:
                await _until(lambda p=port: _listening(p), 30)
            for i in range(rounds):
                row = await one_round(ports, redis, per_worker)
                text = "".join(log.read_text(errors="replace") for log in logs)
                row["giving_up_logged_total"] = text.count("giving up")
                print(f"round {i + 1}: {json.dumps(row)}", flush=True)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)


def _spawn(port: int, redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BENCH_REDIS_URL": redis_url}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench._faults_socketio_app:app",
             "--port", str(port), "--host", "127.0.0.1", "--log-level", "warning"],
            cwd=ROOT, env=env, stderr=out,
        )  # fmt: skip


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--members-per-worker", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main_async(args.rounds, args.members_per_worker))


if __name__ == "__main__":
    main()
