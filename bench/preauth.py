"""What unauthenticated sockets cost the server: one ~15 KB deflate frame each, before auth.

    python -m bench.preauth            # 8 sockets per setting
    python -m bench.preauth --n 16

Per setting, a fresh uvicorn (``--ws websockets-sansio``, the default, ``--ws-max-size``
left at 16 MiB) serving ``FirstMessageAuthMiddleware`` (``max_auth_size`` 4 KiB) behind
``HandshakeMiddleware``; N clients each send one text frame that is 15 MiB of spaces,
which deflates to ~15 KB on the wire. The figure is the server's peak RSS (VmHWM) over
its RSS before the clients came:

- ``uvicorn defaults``: deflate negotiated; the server inflates every frame before our
  size check runs (also with the legacy ``--ws websockets``).
- ``--ws-max-size 65536``: deflate negotiated, but the server stops inflating at 64 KiB
  and closes 1009 itself.
- ``refuse_deflate=True``: the handshake that offers deflate is refused (400); the
  attacker's 15 KB then arrive as 15 KB.
- ``--ws-per-message-deflate false``: the server declines the extension; same.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time

import websockets

APP = "bench.preauth:app"
FRAME = " " * (15 * 1024 * 1024)


async def _authenticate(token: str) -> str | None:
    return None


def _app() -> object:
    from asgi_rt import FirstMessageAuthMiddleware, HandshakeMiddleware

    async def endpoint(scope: object, receive: object, send: object) -> None:
        raise AssertionError("never authenticated")

    refuse = os.environ.get("BENCH_REFUSE_DEFLATE") == "1"
    auth = FirstMessageAuthMiddleware(endpoint, authenticate=_authenticate, timeout=30)
    return HandshakeMiddleware(auth, allowed_origins=["*"], allow_missing_origin=True,
                               refuse_deflate=refuse)  # fmt: skip


def _rss_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(x for x in status if x.startswith(field))
    return int(line.split()[1])


async def _attack(port: int) -> str:
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None,
                                      open_timeout=30) as ws:  # fmt: skip
            await ws.send(FRAME if ws.protocol.extensions else FRAME[: 15 * 1024])
            with contextlib.suppress(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 60)
            return f"closed {ws.close_code}"
    except websockets.InvalidStatus as refused:
        return f"refused {refused.response.status_code}"


def _measure(n: int, extra: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "uvicorn", APP, "--port", str(port), "--log-level", "error",
           *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**os.environ, **env})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            time.sleep(0.1)
        before = _rss_kib(proc.pid, "VmRSS")

        async def run() -> list[str]:
            return await asyncio.gather(*(_attack(port) for _ in range(n)))

        outcomes = asyncio.run(run())
        return (_rss_kib(proc.pid, "VmHWM") - before) // 1024, outcomes
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=8)
    args = parser.parse_args()
    settings = [
        ("uvicorn defaults", [], {}),
        ("defaults, --ws websockets (legacy)", ["--ws", "websockets"], {}),
        ("--ws-max-size 65536", ["--ws-max-size", "65536"], {}),
        ("refuse_deflate=True", [], {"BENCH_REFUSE_DEFLATE": "1"}),
        ("--ws-per-message-deflate false", ["--ws-per-message-deflate", "false"], {}),
    ]
    print(f"| setting ({args.n} sockets, ~15 KB each on the wire) | server peak RSS growth | "
          "what the attacker got |")  # fmt: skip
    print("|---|---|---|")
    for name, extra, env in settings:
        mib, outcomes = _measure(args.n, extra, env)
        print(f"| {name} | {mib} MiB | {', '.join(sorted(set(outcomes)))} |")


if __name__ == "__main__":
    main()
else:
    app = _app()
