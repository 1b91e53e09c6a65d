"""The README's complete app, extracted and run as pasted on a real uvicorn: it cannot rot."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from ._poll import await_for
from ._system import ROOT, free_port, listening, spawn_uvicorn

pytestmark = [pytest.mark.anyio, pytest.mark.server]

MARK = "<!-- complete-app -->\n```python\n"
ORIGIN = "http://localhost:8000"  # what the README's allowlist names


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def complete_app() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(MARK) + len(MARK)
    return readme[start : readme.index("```\n", start)]


@pytest.fixture
def readme_app(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "app.py").write_text(complete_app())
    port = free_port()
    proc = spawn_uvicorn("app:app", port, "--app-dir", str(tmp_path), stderr=subprocess.PIPE)
    try:
        yield port
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        assert b"Traceback" not in err, err.decode()


async def login(port: int, room: str, token: str) -> websockets.ClientConnection:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws/{room}", origin=ORIGIN)  # type: ignore[arg-type]
    await ws.send(json.dumps({"type": "auth", "token": token}))
    assert json.loads(await ws.recv()) == {"type": "auth_ok"}
    return ws


async def said(ws: websockets.ClientConnection) -> object:
    frame = json.loads(await ws.recv())
    assert frame["room"] == "lobby" and isinstance(frame["seq"], int), frame
    return frame["data"]


async def test_the_readme_app_runs_as_pasted(readme_app: int) -> None:
    port = readme_app
    await await_for(lambda: listening(port), 30, "uvicorn serving the README's app")
    async with await login(port, "lobby", "bob-token") as bob:
        await bob.send(json.dumps({"text": "bob here"}))  # its echo: bob has joined
        assert await said(bob) == {"from": "bob", "said": {"text": "bob here"}}
        async with await login(port, "lobby", "alice-token") as alice:
            await alice.send(json.dumps({"text": "hi bob"}))
            assert await said(bob) == {"from": "alice", "said": {"text": "hi bob"}}
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"http://127.0.0.1:{port}/metrics", timeout=10)).text
    assert 'asgi_rt_connections_total{outcome="accepted",route="/ws/{room}"} 2.0' in metrics
