"""Instructions per sent data frame, with and without TelemetryMiddleware (callgrind).

``python -m bench.frame_cost`` runs this module under ``valgrind --tool=callgrind``
twice per variant (1 000 and 11 000 frames) and reports the difference / 10 000, so
start-up and the handshake cancel out. Instruction counts repeat under load, unlike the
fan-out timings on a shared machine: use them to decide a per-frame change, then
confirm with ``bench.fanout``. The app accepts, sends N 100 B text frames to a downstream
send that completes at once (a healthy peer's inline path), and returns; no sockets.
``telemetry_direct`` sends as ``ConnectionManager(direct_send=True)`` does on that path:
with the send seam's ``send`` (below the middleware), then adding the frame to the
connection's tally (what telemetry reads at scrape time).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry
from starlette.types import Message, Receive, Scope, Send

from asgi_rt import TelemetryMiddleware
from asgi_rt._sendseam import seam_of

VARIANTS = ("bare", "telemetry", "telemetry_direct")
_COUNTS = (1_000, 11_000)


def _app(frames: int, direct: bool) -> object:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        message = {"type": "websocket.send", "text": "x" * 100}
        seam = seam_of(scope) if direct else None
        if seam is None:
            for _ in range(frames):
                await send(message)
            return
        for _ in range(frames):
            await seam.send(message)
            if seam.tally is not None:  # in-process metrics: counted in bulk
                seam.tally.add(100, message.get("text") is not None)
            else:
                seam.sent(message, 100, 0.0)

    return app


async def _drive(variant: str, frames: int) -> None:
    app = _app(frames, direct=variant == "telemetry_direct")
    if variant.startswith("telemetry"):
        app = TelemetryMiddleware(app, registry=CollectorRegistry(),  # type: ignore[arg-type]
                                  frame_sample_ratio=0.01, loop_lag=False)  # fmt: skip
    scope = {"type": "websocket", "path": "/ws", "headers": [], "scheme": "ws"}

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        return None

    await app(scope, receive, send)  # type: ignore[operator]


def _instructions(variant: str, frames: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={Path(tmp) / 'cg'}",
             sys.executable, "-m", "bench.frame_cost", "--run", variant, str(frames)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"no callgrind total in: {out.stderr[-500:]}")
    return int(found.group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--run", nargs=2, metavar=("VARIANT", "FRAMES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run:
        asyncio.run(_drive(args.run[0], int(args.run[1])))
        return
    per_frame = {}
    for variant in args.variants.split(","):
        low, high = (_instructions(variant, n) for n in _COUNTS)
        per_frame[variant] = (high - low) / (_COUNTS[1] - _COUNTS[0])
    base = per_frame.get("bare")
    print("variant          instructions/frame  x bare")
    for variant, count in per_frame.items():
        ratio = f"{count / base:6.2f}" if base else "     -"
        print(f"{variant:16} {count:18.0f}  {ratio}")


if __name__ == "__main__":
    main()
