"""SIGTERM to a uvicorn with 1000 open connections: every client sees a clean close,
and with ``drain_on_signal`` the closes are spread over the window."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
import websockets

from asgi_rt._retry_hint import retry_hint

from ._poll import await_for
from ._system import close_of, free_port, listening, raise_open_files, spawn_uvicorn

pytestmark = [pytest.mark.anyio, pytest.mark.server]
CLIENTS = 1000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=[None, 2.0], ids=["uvicorn-close", "drain-2s"])
def uvicorn_process(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[int, subprocess.Popen[bytes], float | None]]:
    """A uvicorn process serving tests._rooms_app (RoomManager, lifespan on), with or
    without ``drain_on_signal`` (its window in seconds)."""
    raise_open_files(8192)
    port = free_port()
    window = request.param
    env = dict(os.environ)
    if window is not None:
        env["ASGI_RT_TEST_DRAIN_WINDOW"] = str(window)
    server = spawn_uvicorn("tests._rooms_app:app", port, "--backlog", "2048", env=env,
                           stderr=subprocess.PIPE)  # fmt: skip
    yield port, server, window
    if server.poll() is None:
        server.kill()
        server.wait()
    if server.stderr is not None:
        server.stderr.close()


async def test_sigterm_closes_every_connection_cleanly(
    uvicorn_process: tuple[int, subprocess.Popen[bytes], float | None],
) -> None:
    port, server, window = uvicorn_process
    clients: list[websockets.ClientConnection] = []
    await await_for(lambda: listening(port), 20, "uvicorn")
    try:
        for i in range(CLIENTS):
            ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws/room{i % 10}")
            await ws.recv()  # {"type": "joined", ...}: it is a member now
            clients.append(ws)
        server.send_signal(signal.SIGTERM)
        closes = await asyncio.gather(*(_timed_close(ws) for ws in clients))
    finally:
        for ws in clients:
            await ws.close()
    await await_for(lambda: server.poll() is not None, 30, "uvicorn to exit")
    stderr = server.stderr.read() if server.stderr else b""
    codes = [code for code, _, _ in closes]
    assert len(codes) == CLIENTS
    assert server.returncode in {0, -signal.SIGTERM}  # uvicorn re-raises the signal it handled
    assert b"Traceback" not in stderr, stderr.decode()[-2000:]
    if window is None:
        assert set(codes) <= {1001, 1012}, {c: codes.count(c) for c in set(codes)}  # never 1006
        return
    assert set(codes) == {1012}, {c: codes.count(c) for c in set(codes)}
    hints = [retry_hint(reason) for _, reason, _ in closes]  # ours, not uvicorn's
    assert all(r.startswith("service restart; retry in ") for _, r, _ in closes), closes[:3]
    assert all(h is not None and 0 <= h <= 2 * window + 0.05 for h in hints)
    assert len(set(hints)) >= 10  # a delay per connection, spread, not one for all
    times = sorted(at for _, _, at in closes)
    # spread, not all at once: the batches are 50 ms apart and can only come later than planned
    assert times[-1] - times[0] >= window / 2, times[-1] - times[0]
    assert len({round(at, 2) for at in times}) >= 10


async def test_a_connection_opened_during_the_drain_is_closed_by_it() -> None:
    """The server still accepts during the window; the drain closes those late ones too
    (before, uvicorn's own sweep did, when it saw them: 1012 without a reason)."""
    port = free_port()
    env = {**os.environ, "ASGI_RT_TEST_DRAIN_WINDOW": "2.0"}
    server = spawn_uvicorn("tests._rooms_app:app", port, env=env, stderr=subprocess.PIPE)
    try:
        await await_for(lambda: listening(port), 20, "uvicorn")
        held = [await _joined(port, i) for i in range(50)]
        closes = [asyncio.ensure_future(close_of(ws, 30)) for ws in held]
        server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.wait(closes, return_when=asyncio.FIRST_COMPLETED), 20)
        late = await _joined(port, 0)  # the drain has begun; the window is still open
        late_close = await close_of(late, 30)
        await asyncio.wait_for(asyncio.gather(*closes), 30)
        await await_for(lambda: server.poll() is not None, 30, "uvicorn to exit")
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
    stderr = server.stderr.read().decode() if server.stderr else ""
    if server.stderr is not None:
        server.stderr.close()
    assert late_close == (1012, "service restart")
    assert {close.result()[0] for close in closes} == {1012}
    assert "Traceback" not in stderr, stderr[-2000:]


async def _joined(port: int, i: int) -> websockets.ClientConnection:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws/room{i % 10}")
    await ws.recv()  # {"type": "joined", ...}: it is a member now
    return ws


async def _timed_close(ws: websockets.ClientConnection) -> tuple[int | None, str, float]:
    code, reason = await close_of(ws, 30)
    return code, reason, time.monotonic()


@pytest.mark.parametrize("after_first", [[signal.SIGINT], [signal.SIGTERM, signal.SIGINT]],
                         ids=["TERM-INT", "TERM-TERM-INT"])  # fmt: skip
async def test_a_stuck_shutdown_is_forced_by_further_signals(
    after_first: list[signal.Signals],
) -> None:
    """SIGTERM starts a 60 s drain; a handler ignores its close, so uvicorn's graceful
    shutdown would wait forever. A SIGINT after that forces the exit, as without us."""
    port = free_port()
    server = spawn_uvicorn("tests._stuck_app:app", port, env=dict(os.environ),
                           stderr=subprocess.PIPE)  # fmt: skip
    try:
        await await_for(lambda: listening(port), 20, "uvicorn")
        held = [await websockets.connect(f"ws://127.0.0.1:{port}/hold") for _ in range(2)]
        stuck = await websockets.connect(f"ws://127.0.0.1:{port}/stuck")
        closes = [asyncio.ensure_future(close_of(ws, 60)) for ws in held]
        server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.wait(closes, return_when=asyncio.FIRST_COMPLETED), 20)
        for sig in after_first:  # one at a time: pending signals are delivered by number
            if sig == signal.SIGTERM:
                server.send_signal(sig)  # the graceful shutdown: it closes the other one
                await asyncio.wait_for(asyncio.gather(*closes), 20)
            else:
                server.send_signal(sig)
        await await_for(lambda: server.poll() is not None, 20, "the forced exit")
        await stuck.close()
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
    stderr = server.stderr.read().decode() if server.stderr else ""
    assert "Exception in ASGI application" not in stderr, stderr[-2000:]
    if server.stderr is not None:
        server.stderr.close()
