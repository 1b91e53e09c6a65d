"""A real redis-server for the tests, on a free loopback port, restartable.

Besides start/stop, the faults an operator's bad day brings: a crash (SIGKILL) or a
shutdown (SIGTERM) and a restart on the same port without persistence, a freeze
(SIGSTOP/SIGCONT), and commands on a plain admin client (CLIENT KILL, FLUSHALL, CONFIG).
"""

from __future__ import annotations

import signal
import socket
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import redis

from ._poll import wait_for
from ._system import free_port, require_binary


class RedisServer:
    def __init__(self, workdir: Path, *args: str) -> None:
        self.binary = require_binary("redis-server", "redis-server")
        self.workdir = workdir
        self.args = args  # more options (a cluster node's)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start on the port; a first start whose port was taken meanwhile (another test
        process got it between ``free_port()`` and the bind) tries fresh ports, a restart
        keeps its port as it must."""
        for _ in range(3):
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir), *self.args],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            proc = self.proc
            wait_for(partial(self._up_or_gone, proc), what="redis-server to answer PING")
            if proc.poll() is None:
                self.started = True
                return
            if self.started:
                break
            self.port, self.args = free_port(), _fresh_ports(self.args)
        raise AssertionError(f"redis-server exited at start on port {self.port}")

    def _up_or_gone(self, proc: subprocess.Popen[bytes]) -> bool:
        return self._pong() or proc.poll() is not None

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def restart(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Stop with ``sig`` (a crash by default), wait for the process to end, and start a
        fresh one on the same port: no persistence, so every key is gone."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(10)
        self.proc = None
        self.start()

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Stop with ``sig`` (a crash by default) and wait for the process to end."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the process freezes with its sockets open (a GC pause, a stalled VM)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def command(self, *args: Any) -> Any:
        """Run one command on a fresh admin connection (e.g. ``"CLIENT", "KILL", ...``)."""
        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10) as admin:
            return admin.execute_command(*args)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def _fresh_ports(args: tuple[str, ...]) -> tuple[str, ...]:
    """``args`` with a new free port after every ``--cluster-port``."""
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg == "--cluster-port":
            out[i + 1] = str(free_port())
    return tuple(out)
