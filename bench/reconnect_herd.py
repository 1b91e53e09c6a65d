"""Reconnect herd after a restart: when do N ResilientClients come back?

``python -m bench.reconnect_herd [--clients 200] [--window 2]``: for each scenario, start a
uvicorn, connect N clients (default ``Backoff``), send SIGTERM, start a new uvicorn on the
same port as soon as the old one has exited, and record when each client is connected
again (by the new server). Prints a histogram of those reconnect times (0.25 s bins from
the SIGTERM) per scenario, and how many reconnects went to the old, draining server:

- ``uvicorn-close``: no drain; uvicorn closes every socket at once (1012);
- ``drain``: ``drain_on_signal(window=W)`` without the suggested delay (main before #18);
- ``drain+hint``: the closes carry ``"; retry in X s"``, which the client obeys.

Not part of ``make test``: it measures, it does not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

from asgi_rt.client import ResilientClient

from ._proc import ROOT

BIN = 0.25


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _spawn(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", "bench._herd_server:app", "--port", str(port),
               "--host", "127.0.0.1", "--log-level", "warning", "--backlog", "4096"]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env})


async def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def run(clients: int, env: dict[str, str]) -> dict[str, Any]:
    """One restart; reconnect times (s after SIGTERM), attempts, and the new server's start."""
    port = _free_port()
    server = _spawn(port, env)
    seen: list[list[float]] = [[] for _ in range(clients)]  # per client: connects after SIGTERM
    signalled, exited = [0.0], [float("inf")]

    def on_connect(i: int) -> Any:
        async def record(ws: Any, positions: Any) -> None:
            if signalled[0]:
                seen[i].append(time.monotonic() - signalled[0])

        return record

    def back() -> list[float]:  # each client's first connect to the new server
        return sorted(next(t for t in ts if t > exited[0]) for ts in seen
                      if any(t > exited[0] for t in ts))  # fmt: skip

    await _until(lambda: _listening(port), 30, "the first server")
    async with AsyncExitStack() as stack:  # left in reverse order, as task groups need
        pool = [await stack.enter_async_context(
                    ResilientClient(f"ws://127.0.0.1:{port}/ws", on_connect=on_connect(i)))
                for i in range(clients)]  # fmt: skip
        try:
            await _until(lambda: all(c.connects == 1 for c in pool), 60, "every client")
            attempts = sum(c.attempts for c in pool)
            signalled[0] = time.monotonic()
            server.send_signal(signal.SIGTERM)
            await asyncio.get_running_loop().run_in_executor(None, server.wait, 60)
            exited[0] = time.monotonic() - signalled[0]
            server = _spawn(port, env)
            await _until(lambda: _listening(port), 30, "the second server")
            listening = time.monotonic() - signalled[0]
            await _until(lambda: len(back()) >= clients, 120, "every reconnect")
            retries = sum(c.attempts for c in pool) - attempts - clients
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    early = sum(1 for ts in seen for t in ts if t < exited[0])
    return {"back": back(), "exited": exited[0], "listening": listening, "refused": retries,
            "early": early}  # fmt: skip


def histogram(times: list[float]) -> list[str]:
    bins = Counter(int(t / BIN) for t in times)
    top = max(bins.values())
    bars = {b: "#" * round(40 * n / top) for b, n in bins.items()}
    return [f"  {b * BIN:5.2f}-{(b + 1) * BIN:5.2f} s {bins[b]:5d} {bars[b]}"
            for b in range(max(bins) + 1) if bins[b]]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--only", help="run one scenario (uvicorn-close, drain, drain+hint)")
    args = parser.parse_args()
    scenarios = {
        "uvicorn-close": {},
        "drain": {"HERD_DRAIN_WINDOW": str(args.window), "HERD_RETRY_HINT": "0"},
        "drain+hint": {"HERD_DRAIN_WINDOW": str(args.window), "HERD_RETRY_HINT": "1"},
    }
    for name, env in scenarios.items():
        if args.only not in (None, name):
            continue
        result = asyncio.run(run(args.clients, env))
        back = result["back"]
        peak = max(Counter(int(t / BIN) for t in back).values())
        print(f"{name}: {args.clients} clients, old server exited at {result['exited']:.2f} s, "
              f"new one listening at {result['listening']:.2f} s; reconnects p50 "
              f"{back[len(back) // 2]:.2f} s, max {back[-1]:.2f} s, peak {peak} per {BIN} s, "
              f"{result['refused']} failed attempts meanwhile, {result['early']} reconnects "
              "to the old server while it drained")  # fmt: skip
        print("\n".join(histogram(back)), flush=True)


if __name__ == "__main__":
    main()
