"""SIGTERM to a uvicorn with 1000 open connections: every client sees a clean close."""

from __future__ import annotations

import asyncio
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from ._poll import await_for

pytestmark = [pytest.mark.anyio, pytest.mark.server]
ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 1000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _close_code(ws: websockets.ClientConnection) -> int | None:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 30)
    except ConnectionClosed as closed:
        return None if closed.rcvd is None else closed.rcvd.code
    return None  # pragma: no cover


@pytest.fixture
def uvicorn_process() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A uvicorn process serving tests._rooms_app (RoomManager, lifespan on)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests._rooms_app:app", "--port", str(port),
         "--host", "127.0.0.1", "--log-level", "warning", "--backlog", "2048"],
        cwd=ROOT, stderr=subprocess.PIPE,
    )  # fmt: skip
    yield port, server
    if server.poll() is None:
        server.kill()
        server.wait()
    if server.stderr is not None:
        server.stderr.close()


async def test_sigterm_closes_every_connection_cleanly(
    uvicorn_process: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, server = uvicorn_process
    clients: list[websockets.ClientConnection] = []
    await await_for(lambda: _listening(port), 20, "uvicorn")
    try:
        for i in range(CLIENTS):
            ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws/room{i % 10}")
            await ws.recv()  # {"type": "joined"}
            clients.append(ws)
        server.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*(_close_code(ws) for ws in clients))
    finally:
        for ws in clients:
            await ws.close()
    await await_for(lambda: server.poll() is not None, 30, "uvicorn to exit")
    stderr = server.stderr.read() if server.stderr else b""
    assert len(codes) == CLIENTS
    assert set(codes) <= {1001, 1012}, {c: codes.count(c) for c in set(codes)}  # never 1006
    assert server.returncode in {0, -signal.SIGTERM}  # uvicorn re-raises the signal it handled
    assert b"Traceback" not in stderr, stderr.decode()[-2000:]
