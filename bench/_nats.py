"""A nats-server with JetStream of the benchmarks' own: a free loopback port, a store in a
temporary directory (deleted on exit), HTTP monitoring on another free port (``varz``)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from types import TracebackType
from typing import Any

from ._proc import _pinned

__all__ = ["NatsServer"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsServer:
    """``with NatsServer(cpu) as nats: nats.url, nats.varz()``."""

    def __init__(self, cpu: int | None = None) -> None:
        self.binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        self.port, self.monitor = _free_port(), _free_port()
        self.workdir = tempfile.mkdtemp(prefix="bench-nats-")
        self.cpu = cpu
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def reset(self) -> None:
        """Start again with an empty store (the FLUSHALL of a session: numbering from 1)."""
        self.__exit__(None, None, None)
        self.workdir = tempfile.mkdtemp(prefix="bench-nats-")
        self.__enter__()

    def __enter__(self) -> NatsServer:
        self.proc = subprocess.Popen(
            [self.binary, "-js", "-sd", self.workdir, "-a", "127.0.0.1", "-p", str(self.port),
             "-m", str(self.monitor)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_pinned(self.cpu),
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.varz()
                return self
            except OSError:
                time.sleep(0.05)
        self.__exit__(None, None, None)
        raise RuntimeError("nats-server did not start")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def pin(self, cpu: int | None) -> None:
        """Move nats-server (all its threads) to ``cpu``, or let it run anywhere."""
        cpus = {cpu} if cpu is not None else os.sched_getaffinity(0)
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            os.sched_setaffinity(int(tid), cpus)

    def varz(self) -> dict[str, Any]:
        """The server's counters (``in_msgs``, ``out_msgs``, ``version``...)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/varz", timeout=2) as r:
            return dict(json.load(r))
