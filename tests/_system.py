"""What the tests run for real around the app: system programs, ports, processes, peers."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[1]


def require_binary(command: str, package: str) -> str:
    """The path of ``command``; under CI=true a missing one fails the test, else skips it."""
    found = shutil.which(command) or next(
        (f"{d}/{command}" for d in ("/usr/bin", "/usr/sbin") if Path(f"{d}/{command}").exists()),
        None,
    )  # nginx lives in /usr/sbin, which a non-root PATH may lack
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{command} is not installed; `make test` installs Debian's {package}")
        pytest.skip(f"{command} is not installed (apt-get install {package})")
    return found


CLIENT_BUNDLE = ROOT / "clients" / "js" / "dist" / "index.js"


def require_client_bundle() -> None:
    """The browser client's bundle, which the pages load; under CI=true a missing one fails
    the test, else skips it (``make js`` builds it; ``make test`` runs that first)."""
    if not CLIENT_BUNDLE.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CLIENT_BUNDLE} is missing: `make js` builds it")
        pytest.skip(f"{CLIENT_BUNDLE} is missing: run `make js`")


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def raise_open_files(limit: int) -> None:
    """Allow ``limit`` open files (sockets), within the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, limit)), hard))


def spawn_uvicorn(app: str, port: int, *args: str, env: dict[str, str] | None = None,
                  stderr: int | None = None) -> subprocess.Popen[bytes]:  # fmt: skip
    """``python -m uvicorn <app>`` on 127.0.0.1:<port>, from the repository root."""
    command = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--host", "127.0.0.1",
               "--log-level", "warning", *args]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=env, stderr=stderr)


async def close_of(ws: websockets.ClientConnection, timeout: float = 10) -> tuple[int | None, str]:
    """Read until the server closes; its close code and reason (``None``: no close frame)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as closed:
        rcvd = closed.rcvd
        return (None, "") if rcvd is None else (rcvd.code, rcvd.reason)
