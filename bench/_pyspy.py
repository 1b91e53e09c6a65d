"""Run ``py-spy record --format raw --threads --full-filenames`` on a server; summarise it.

Each line of the raw (collapsed) format is ``thread (tid): name;frame;...;frame count``,
root first, a frame being ``function (file:line)``. py-spy leaves out idle samples (a
thread blocked in ``epoll_wait`` or on a lock), so the percentages are of the time the
server's threads were running.

Two views:

* **self**: the package of the innermost frame, i.e. whose code was executing;
* **owner**: the innermost frame that belongs to a *layer* (asgi_rt, the OTel ASGI
  instrumentation, Starlette, the bench app, uvicorn, websockets, asyncio, redis-py). Work the
  OTel SDK/API, prometheus_client or the stdlib do on asgi_rt's behalf counts as
  asgi_rt's; ``await send(...)`` from asgi_rt into uvicorn counts as uvicorn's. Samples
  of threads other than the main one (the BatchSpanProcessor's worker) are kept apart.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?):(?P<line>\d+)\)$")

# most specific first
_CATEGORIES = (
    ("/asgi_rt/", "asgi_rt"),
    ("/opentelemetry/sdk/", "otel_sdk"),
    ("/opentelemetry/instrumentation/", "otel_instrumentation"),
    ("/opentelemetry/util/http", "otel_instrumentation"),
    ("/opentelemetry/", "otel_api"),
    ("/prometheus_client/", "prometheus"),
    ("/site-packages/redis/", "redis_py"),
    ("/uvicorn/", "uvicorn"),
    ("/websockets/", "websockets"),
    ("/starlette/", "starlette"),
    ("/bench/", "bench_app"),
    ("/asyncio/", "asyncio"),
    ("/site-packages/", "other_lib"),
)
LAYERS = frozenset(
    {
        "asgi_rt",
        "otel_instrumentation",
        "starlette",
        "bench_app",
        "uvicorn",
        "websockets",
        "asyncio",
        "redis_py",
    }
)


def start_py_spy(
    pid: int, out: Path, rate: int, *, blocking: bool = False, native: bool = False
) -> subprocess.Popen[bytes]:
    """Attach py-spy to ``pid``, writing the raw profile to ``out`` once stopped.

    By default it samples with ``--nonblocking`` (the server is never paused, but a stack
    read while it changes is dropped or cut short); ``blocking`` pauses the server per
    sample, which keeps whole stacks; ``native`` adds the C frames.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    py_spy = Path(sys.executable).with_name("py-spy")
    cmd = [str(py_spy), "record", *([] if blocking else ["--nonblocking"])]
    cmd += [*(["--native"] if native else []), "--format", "raw", "--threads"]
    cmd += ["--full-filenames", "--rate", str(rate), "--pid", str(pid), "-o", str(out)]
    spy = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(0.5)  # attached before the client starts
    return spy


def stop_py_spy(spy: subprocess.Popen[bytes]) -> tuple[str, dict[str, int]]:
    """Stop py-spy (it writes its output on SIGINT): (error if it failed, its sample counts)."""
    spy.send_signal(signal.SIGINT)
    try:
        out, _ = spy.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        spy.kill()
        return "py-spy did not stop", {}
    text = out.decode(errors="replace")
    m = re.search(r"Samples: (\d+) Errors: (\d+)", text)
    counts = {"samples": int(m[1]), "errors": int(m[2])} if m else {}
    return ("" if spy.returncode == 0 else text[-500:]), counts


def category(filename: str) -> str:
    for fragment, name in _CATEGORIES:
        if fragment in filename:
            return name
    return "stdlib"


def _frame(text: str) -> tuple[str, str, str]:
    """(function, short file, category) of one frame."""
    m = _FRAME.match(text)
    if m is None:
        return text, "?", "stdlib"
    filename = m["file"]
    cat = category(filename)
    short = filename.rsplit("/site-packages/", 1)[-1]
    short = short.split("/src/", 1)[-1] if cat == "asgi_rt" else short.rsplit("/", 2)[-1]
    if cat in ("asyncio", "stdlib", "bench_app") and "/" in short:
        short = short.rsplit("/", 1)[-1]
    return m["func"], short, cat


def summarize_raw(path: Path, top: int = 15) -> dict[str, Any]:
    total = main = 0
    self_cat: Counter[str] = Counter()
    owner_cat: Counter[str] = Counter()
    asgi_rt_by_leaf: Counter[str] = Counter()
    leaf_funcs: Counter[str] = Counter()
    asgi_rt_funcs: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *frames = stack.split(";")
        thread_name = thread.split(": ", 1)[-1]
        threads[thread_name] += count
        total += count
        if not frames:
            continue
        parsed = [_frame(f) for f in frames]
        func, short, leaf = parsed[-1]
        self_cat[leaf] += count
        leaf_funcs[f"{short}:{func} [{leaf}]"] += count
        if thread_name != "MainThread":
            owner_cat[f"thread {thread_name}"] += count
            continue
        main += count
        owner = next((p for p in reversed(parsed) if p[2] in LAYERS), None)
        owner_name = owner[2] if owner else leaf
        owner_cat[owner_name] += count
        if owner is not None and owner_name == "asgi_rt":
            asgi_rt_by_leaf[leaf] += count
            asgi_rt_funcs[f"{owner[1]}:{owner[0]}"] += count

    def pct(c: Counter[str]) -> list[tuple[str, float]]:
        return [(k, 100.0 * v / total) for k, v in c.most_common()] if total else []

    return {
        "samples": total,
        "main_thread_samples": main,
        "threads": pct(threads),
        "self": pct(self_cat),
        "owner": pct(owner_cat),
        "asgi_rt_owned_by_leaf": pct(asgi_rt_by_leaf),
        "asgi_rt_functions": pct(asgi_rt_funcs)[:top],
        "top_self_functions": pct(leaf_funcs)[:top],
    }


def print_profile(s: dict[str, Any]) -> None:
    def row(items: list[tuple[str, float]], limit: int = 12) -> str:
        return ", ".join(f"{k} {v:.1f}%" for k, v in items[:limit] if v >= 0.5)

    print(f"  {s['samples']} non-idle samples ({s['main_thread_samples']} in the main thread)")
    print(f"  threads: {row(s['threads'])}")
    print(f"  self (code executing): {row(s['self'])}")
    print(f"  owner (layer that asked for it): {row(s['owner'])}")
    print(f"  asgi_rt-owned, by what ran: {row(s['asgi_rt_owned_by_leaf'])}")
    print("  asgi_rt functions (innermost asgi_rt frame, own work + OTel/prometheus/stdlib calls):")
    print_shares(s["asgi_rt_functions"])
    print("  top self functions:")
    print_shares(s["top_self_functions"])


def print_shares(shares: list[tuple[str, float]]) -> None:
    """One indented line per ``(name, percent)``."""
    for name, share in shares:
        print(f"    {share:5.1f}%  {name}")
