"""SIGTERM to a uvicorn with 1000 open connections: every client sees a clean close."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator

import pytest
import websockets

from ._poll import await_for
from ._system import close_of, free_port, listening, raise_open_files, spawn_uvicorn

pytestmark = [pytest.mark.anyio, pytest.mark.server]
CLIENTS = 1000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def uvicorn_process() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A uvicorn process serving tests._rooms_app (RoomManager, lifespan on)."""
    raise_open_files(8192)
    port = free_port()
    server = spawn_uvicorn("tests._rooms_app:app", port, "--backlog", "2048",
                           stderr=subprocess.PIPE)  # fmt: skip
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
    await await_for(lambda: listening(port), 20, "uvicorn")
    try:
        for i in range(CLIENTS):
            ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws/room{i % 10}")
            await ws.recv()  # {"type": "joined"}
            clients.append(ws)
        server.send_signal(signal.SIGTERM)
        codes = [code for code, _ in await asyncio.gather(*(close_of(ws, 30) for ws in clients))]
    finally:
        for ws in clients:
            await ws.close()
    await await_for(lambda: server.poll() is not None, 30, "uvicorn to exit")
    stderr = server.stderr.read() if server.stderr else b""
    assert len(codes) == CLIENTS
    assert set(codes) <= {1001, 1012}, {c: codes.count(c) for c in set(codes)}  # never 1006
    assert server.returncode in {0, -signal.SIGTERM}  # uvicorn re-raises the signal it handled
    assert b"Traceback" not in stderr, stderr.decode()[-2000:]
