"""Subprocess plumbing shared by the benchmarks: the server, a client, CPU pinning."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from ._pyspy import stop_py_spy

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
LOG_DIR = OUT_DIR / "logs"

_PROBLEM = re.compile(r"Traceback|ERROR|Exception|exception|Error:")


def pin_cpus(enabled: bool) -> tuple[int | None, int | None]:
    """(server CPU, client CPU): two distinct CPUs when there are at least two."""
    cpus = sorted(os.sched_getaffinity(0))
    if not enabled or len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def _pinned(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


class Server:
    """``python -m <module>`` (default ``bench.fanout_server``) in a subprocess, stopped on exit.

    The module prints one JSON line ``{"port", "stall_port", "pid"}`` once it listens.
    """

    def __init__(
        self,
        variant: str,
        ws: str,
        *,
        tag: str,
        sndbuf: int | None = None,
        cpu: int | None = None,
        start_timeout: float = 30.0,
        module: str = "bench.fanout_server",
        env: dict[str, str] | None = None,
    ) -> None:
        self.module = module
        self.variant = variant
        self.ws = ws
        self.log_path = LOG_DIR / f"{tag}.log"
        self.env = {**os.environ, **(env or {}), "BENCH_VARIANT": variant, "BENCH_WS": ws}
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        if sndbuf is not None:
            self.env["BENCH_SNDBUF"] = str(sndbuf)
        self.cpu = cpu
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.stall_port: int | None = None
        self.pid = 0

    def __enter__(self) -> Server:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module],
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=log,
                preexec_fn=_pinned(self.cpu),
            )
        assert self.proc.stdout is not None
        line = _readline(self.proc.stdout, self.start_timeout)
        if not line:
            self.stop()
            raise RuntimeError(f"server {self.variant}/{self.ws} did not start: {self.log_tail()}")
        info = json.loads(line)
        self.port, self.stall_port, self.pid = info["port"], info["stall_port"], info["pid"]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(8)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def rss_kib(self) -> int:
        """The server's resident set size (VmRSS) in KiB."""
        rss = vm_rss_kib(self.pid)
        if rss < 0:
            raise RuntimeError("no VmRSS")
        return rss

    def problems(self) -> list[str]:
        """Lines of the server's stderr that look like errors or tracebacks."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if _PROBLEM.search(line)]

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _readline(stream: Any, timeout: float) -> bytes:
    """One line from a pipe, or ``b""`` after ``timeout`` seconds."""
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                return b""
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                return b""
            buf += chunk
    finally:
        sel.close()
    return buf.split(b"\n", 1)[0]


def run_client(
    module: str, arg: str, *, timeout: float, cpu: int | None
) -> tuple[dict[str, Any] | None, str]:
    """Run ``python -m module arg``; return (its last stdout line as JSON, error text)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, arg],
            cwd=ROOT,
            capture_output=True,
            timeout=timeout,
            preexec_fn=_pinned(cpu),
        )
    except subprocess.TimeoutExpired:
        return None, f"client timed out after {timeout:.0f} s"
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.decode(errors="replace").strip().splitlines()[-6:])
        return None, f"client exited {done.returncode}: {tail}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result, ""


def client_session(
    server: Server,
    client: str,
    config: Callable[[Server], dict[str, Any]],
    session: dict[str, Any],
    *,
    timeout: float,
    cpu: int | None,
    linger: float = 0.3,
    profile: Callable[[int], subprocess.Popen[bytes]] | None = None,
    check: Callable[[dict[str, Any]], list[str]] | None = None,
) -> dict[str, Any]:
    """Start ``server``, run ``python -m client '<config(server) as JSON>'``, stop the server.

    Adds to ``session``: the client's result (or ``error``), the server's log and the
    problems in it, the session's ``seconds``. ``profile(pid)`` starts py-spy on the server
    (see ``bench._pyspy``), stopped when the client is done. ``check`` says what looks wrong
    in a session that has a result (``session["checks"]``).
    """
    t0 = time.perf_counter()
    spy: subprocess.Popen[bytes] | None = None
    try:
        with server:
            if profile is not None:
                spy = profile(server.pid)
            result, error = run_client(client, json.dumps(config(server)), timeout=timeout, cpu=cpu)
            if spy is not None:
                session["profile_error"], session["py_spy"] = stop_py_spy(spy)
            time.sleep(linger)  # let the server log whatever the clients leaving caused
        session["server_log"] = str(server.log_path)
        session["server_problems"] = server.problems()[:20]
    except RuntimeError as exc:
        result, error = None, str(exc)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
    session["seconds"] = time.perf_counter() - t0
    if result is not None:
        session.update(result)
    if error:
        session["error"] = error
    if check is not None:
        session["checks"] = check(session) if result is not None else []
    return session


def vm_rss_kib(pid: int) -> int:
    """The resident set size (VmRSS) of ``pid`` in KiB; -1 when it has none (a zombie)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1
