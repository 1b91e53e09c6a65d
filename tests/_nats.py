"""A real nats-server with JetStream for the tests, on a free loopback port, restartable.

Its store lives in a directory of its own: a restart keeps it (JetStream data on disk
survives), ``restart(wipe=True)`` deletes it first (history lost, as on a new machine).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path

from ._poll import wait_for
from ._system import free_port, require_binary


class NatsServer:
    def __init__(self, workdir: Path) -> None:
        self.binary = require_binary("nats-server", "nats-server")
        self.store = workdir / "jetstream"
        self.log = workdir / "nats-server.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.store.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:  # what the server said, for a failing test
            self.proc = subprocess.Popen(
                [self.binary, "-js", "-sd", str(self.store), "-a", "127.0.0.1",
                 "-p", str(self.port)], stdout=log, stderr=log,
            )  # fmt: skip
        wait_for(self._ready, what="nats-server to answer PING")

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.recv(4096)  # INFO
                sock.sendall(b"CONNECT {}\r\nPING\r\n")
                return b"PONG" in sock.recv(64)
        except OSError:
            return False

    def restart(self, *, wipe: bool = False, sig: signal.Signals = signal.SIGKILL) -> None:
        """Stop with ``sig`` (a crash by default) and start again on the same port; with
        ``wipe`` the JetStream store is deleted in between."""
        self.stop(sig)
        if wipe:
            shutil.rmtree(self.store, ignore_errors=True)
        self.start()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
            self.proc = None
