"""Where an SSE server's time goes: py-spy with full stacks, summarised for ``bench.sse``."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

# A sample counts for every pattern found anywhere in its stack.
INCLUSIVE = (
    ("POST /pub handler", r"endpoint \(.*/bench/sse_server\.py"),
    ("ConnectionManager.broadcast", r"broadcast \(.*/asgi_rt/connections/manager\.py"),
    ("Sender.deliver", r"deliver \(.*/asgi_rt/connections/_sender\.py"),
    ("EventStream._send (frame + ASGI send)", r"_send \(.*/asgi_rt/sse\.py"),
    ("format_event (per recipient)", r"format_event \(.*/asgi_rt/sse\.py"),
    ("uvicorn RequestResponseCycle.send", r"send \(.*/uvicorn/protocols/http/"),
    ("h11 framing (Connection.send)", r"send \(.*/h11/_connection\.py"),
    ("transport.write", r"write \(.*/asyncio/selector_events\.py"),
    ("send() syscall (libc)", r";send \([^;]*libc"),
)
# What was executing (the innermost frame), by layer; most specific first.
LAYERS = (
    ("libc send()", r"^send \([^)]*libc"),
    ("native, other", r"^(0x[0-9a-f]+|[^(]*) \([^:]*\)$"),
    ("asgi_rt", r"/asgi_rt/"),
    ("sse_starlette (ServerSentEvent.encode)", r"/sse_starlette/"),
    ("h11", r"/h11/"),
    ("uvicorn", r"/uvicorn/"),
    ("starlette", r"/starlette/"),
    ("asyncio", r"/asyncio/"),
    ("bench app", r"/bench/"),
    ("other", r""),
)


def profile_shares(path: Path) -> dict[str, list[tuple[str, float]]]:
    """Inclusive shares of :data:`INCLUSIVE` and self shares by :data:`LAYERS`, in %."""
    inclusive = [(name, re.compile(rx)) for name, rx in INCLUSIVE]
    layers = [(name, re.compile(rx)) for name, rx in LAYERS]
    hits: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        for name, rx in inclusive:
            if rx.search(stack):
                hits[name] += count
        leaf = stack.rsplit(";", 1)[-1]
        own[next(name for name, rx in layers if rx.search(leaf))] += count
    scale = 100.0 / max(1, total)
    return {
        "inclusive": [(name, hits[name] * scale) for name, _ in INCLUSIVE],
        "self_by_layer": [(name, n * scale) for name, n in own.most_common()],
    }
