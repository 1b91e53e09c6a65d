"""Two uvicorn worker processes of ``tests.faults._app`` on one Redis, and their clients:
members that stay connected and a publisher at a steady rate that records what it was told."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.exceptions import ConnectionClosed

from .._poll import wait_for
from .._system import free_port, listening, spawn_uvicorn

__all__ = ["Member", "Outcome", "Publisher", "Workers"]

MAX_ATTEMPTS = 250  # a retrying publisher gives up after this many (5 s at 20 ms)


class Workers:
    """``Workers(backend_url, logdir)``: two worker processes, each logging to a file."""

    def __init__(self, backend_url: str, logdir: Path, count: int = 2) -> None:
        self.ports = [free_port() for _ in range(count)]
        self.logs = [logdir / f"worker-{port}.log" for port in self.ports]
        env = {"ASGI_RT_TEST_BACKEND": backend_url, "PATH": ""}
        self.procs: list[subprocess.Popen[bytes]] = []
        for port, log in zip(self.ports, self.logs, strict=True):
            with log.open("wb") as out:
                self.procs.append(
                    spawn_uvicorn("tests.faults._app:app", port, env=env, stderr=out.fileno())
                )
        for port, proc in zip(self.ports, self.procs, strict=True):
            wait_for(lambda p=port, pr=proc: listening(p) or pr.poll() is not None, 30,
                     f"the worker on {port}")  # fmt: skip
            if proc.poll() is not None:
                raise RuntimeError(f"worker on {port} exited: {self.log_text()}")

    def log_text(self) -> str:
        return "".join(log.read_text(errors="replace") for log in self.logs)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@dataclass
class Outcome:
    """One publish as its publisher saw it (times are ``time.monotonic()``)."""

    n: int
    sent: float
    done: float = 0.0
    ok: bool = False
    seq: int | None = None
    epoch: str | None = None
    error: str | None = None  # the exception class publish raised, or what the HTTP call met
    retried: list[str] = field(default_factory=list)  # errors of earlier attempts, if retried


@dataclass
class Publisher:
    """Publishes ``{"n": 1, 2, ...}`` to ``room`` through one worker every ``interval`` s."""

    port: int
    room: str
    interval: float = 0.02
    outcomes: list[Outcome] = field(default_factory=list)
    pads: list[int] = field(default_factory=list)  # sizes of padding for the next publishes
    prime: int = 0  # publishes sent back to back before the steady rate begins
    retry: bool = False  # retry a failed publish with the same idempotency key until ok
    stopping: bool = False

    async def run(self) -> None:
        url = f"http://127.0.0.1:{self.port}/publish/{self.room}"
        next_at = time.monotonic()
        async with httpx.AsyncClient(timeout=15) as client:
            while not self.stopping:
                await self._publish_one(client, url)
                if len(self.outcomes) <= self.prime:
                    continue
                next_at = max(next_at + self.interval, time.monotonic())
                await asyncio.sleep(next_at - time.monotonic())  # the publishing rate

    async def _publish_one(self, client: httpx.AsyncClient, url: str) -> None:
        outcome = Outcome(n=len(self.outcomes) + 1, sent=time.monotonic())
        self.outcomes.append(outcome)
        body: dict[str, Any] = {"n": outcome.n}
        if self.pads:
            body["pad"] = "x" * self.pads.pop(0)
        if not self.retry:
            await self._attempt(client, url, body, outcome)
            return
        url += f"?key={self.room}-{outcome.n}"
        for _ in range(MAX_ATTEMPTS):
            await self._attempt(client, url, body, outcome)
            if outcome.ok or self.stopping or not _retryable(outcome.error):
                return
            outcome.retried.append(str(outcome.error))
            await asyncio.sleep(self.interval)  # the publishing rate, for retries too

    async def _attempt(self, client: httpx.AsyncClient, url: str, body: dict[str, Any],
                       outcome: Outcome) -> None:  # fmt: skip
        try:
            response = await client.post(url, json=body)
            answer = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            answer, outcome.error = None, f"no answer ({type(exc).__name__})"
        else:
            if answer is None:
                outcome.error = f"HTTP {response.status_code}"
        outcome.done = time.monotonic()
        if answer is not None:
            outcome.ok, outcome.error = answer["ok"], answer.get("error")
            outcome.seq, outcome.epoch = answer.get("seq"), answer.get("epoch")

    def ok_count(self) -> int:
        return sum(o.ok for o in self.outcomes)


def _retryable(error: str | None) -> bool:
    """Errors of the backplane (any of them: an unknown outcome is retried with its key)
    and calls that got no answer; not the app failing (HTTP 500)."""
    return error is not None and (error.startswith("no answer") or "Publish" in error
                                  or error == "BackendUnavailable")  # fmt: skip


class Member:
    """A real ``websockets`` client that authenticates, joins ``room`` and records every
    frame it receives with its arrival time, until closed."""

    def __init__(self, name: str, port: int, room: str) -> None:
        self.name, self.url = name, f"ws://127.0.0.1:{port}/ws/{room}"
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self.closed: tuple[int | None, str] | None = None  # set when the server closed it
        self._ws: websockets.ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def join(self) -> None:
        self._ws = ws = await websockets.connect(self.url, max_queue=None, max_size=None)
        await ws.send(json.dumps({"type": "auth", "token": "good"}))
        for expected in ("auth_ok", "joined"):
            frame = json.loads(await asyncio.wait_for(ws.recv(), 15))
            if frame.get("type") != expected:
                raise AssertionError(f"{self.name}: expected {expected}, got {frame}")
            self.frames.append((time.monotonic(), frame))
        self._reader = asyncio.ensure_future(self._read(ws))

    async def _read(self, ws: websockets.ClientConnection) -> None:
        try:
            async for text in ws:
                self.frames.append((time.monotonic(), json.loads(text)))
        except ConnectionClosed:
            pass
        rcvd = ws.close_rcvd
        self.closed = (None if rcvd is None else rcvd.code, "" if rcvd is None else rcvd.reason)

    def room_frames(self) -> list[tuple[float, dict[str, Any]]]:
        return [(t, f) for t, f in self.frames if "seq" in f and "data" in f]

    def numbers(self) -> list[int]:
        return [f["data"]["n"] for _, f in self.room_frames() if isinstance(f["data"], dict)]

    async def leave(self) -> tuple[int | None, str] | None:
        """Close from our side; what the server had closed it with before, if it had."""
        closed_before = self.closed
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 10)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 10)
        return closed_before
