"""The README's Deploying section, executed: Debian's nginx with the README's ``location``
blocks in front of two uvicorn workers started with the README's flags (Redis backplane,
Prometheus multiprocess mode), and a WebSocket chat, an SSE stream and ``/metrics`` through
it; per-client limits count the clients behind the proxy, not the proxy.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from ._poll import wait_for
from ._redis import RedisServer
from ._sseclient import events, next_data_event, sse_headers
from ._system import ROOT, free_port, listening, require_binary, spawn_uvicorn

pytestmark = [pytest.mark.anyio, pytest.mark.server]

APP = "examples.starlette_app.app:app"  # the example with chat, SSE and /metrics
PER_CLIENT = 2  # ASGI_RT_MAX_PER_CLIENT: per worker, as the README says


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def readme_block(kind: str, after: str) -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(f"```{kind}\n", readme.index(after)) + len(kind) + 4
    return readme[start : readme.index("```\n", start)]


def readme_uvicorn_args() -> list[str]:
    """The README's uvicorn flags, for this app and two workers."""
    block = readme_block("sh", "**Several workers.**").replace("\\\n", " ")
    line = next(line for line in block.splitlines() if line.startswith("uvicorn "))
    args = shlex.split(line)[2:]  # without "uvicorn app:app"
    args[args.index("--workers") + 1] = "2"
    return args


def nginx_config(prefix: Path, port: int, upstream: int) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach the temp dirs
    temps = "".join(f"{name}_temp_path {prefix / name};\n"
                    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    return (
        f"{user}daemon off;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} warn;\nevents {{ worker_connections 256; }}\n"
        f"http {{\naccess_log off;\n{temps}upstream app {{ server 127.0.0.1:{upstream}; }}\n"
        f"server {{\nlisten 127.0.0.1:{port};\n{readme_block('nginx', '## Deploying')}}}\n}}\n"
    )


@pytest.fixture
def deployed(tmp_path: Path, redis_server: RedisServer) -> Iterator[int]:
    """nginx's port, in front of ``uvicorn --workers 2`` as the README runs it."""
    nginx = require_binary("nginx", "nginx")
    multiproc, app_port, port = tmp_path / "multiproc", free_port(), free_port()
    multiproc.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
           "ASGI_RT_BACKEND": redis_server.url, "ASGI_RT_PROXY_HOPS": "1",
           "ASGI_RT_MAX_PER_CLIENT": str(PER_CLIENT),
           "ASGI_RT_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}"}  # fmt: skip
    (tmp_path / "nginx.conf").write_text(nginx_config(tmp_path, port, app_port))
    procs = [
        spawn_uvicorn(APP, app_port, *readme_uvicorn_args(), env=env),
        subprocess.Popen(
            [nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
             "-e", str(tmp_path / "error.log")]
        ),
    ]  # fmt: skip
    try:
        for proc, at in zip(procs, (app_port, port), strict=True):
            wait_for(lambda p=proc, a=at: listening(a) or p.poll() is not None, 60)  # type: ignore[misc]
            assert proc.poll() is None, (proc.args, (tmp_path / "error.log").read_text())
        yield port
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)


async def login(port: int, token: str, source: str = "127.0.0.1") -> websockets.ClientConnection:
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/lobby",
        origin=f"http://127.0.0.1:{port}",  # type: ignore[arg-type]
        local_addr=(source, 0),  # a client address of its own, behind the proxy
    )
    await ws.send(json.dumps({"type": "auth", "token": token}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "auth_ok"}
    return ws


async def next_text(ws: websockets.ClientConnection) -> str:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        data = frame.get("data") if "seq" in frame else None
        if isinstance(data, dict) and data.get("type") == "message":
            return str(data["text"])


async def test_chat_sse_and_metrics_through_nginx(deployed: int) -> None:
    port = deployed
    async with await login(port, "bob-token") as bob:
        await bob.send(json.dumps({"text": "bob here"}))
        assert await next_text(bob) == "bob here"  # bob has joined
        async with await login(port, "alice-token") as alice:
            await alice.send(json.dumps({"text": "through nginx"}))
            assert await next_text(bob) == "through nginx"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        async with http.stream("GET", "/events/dashboard", headers=sse_headers()) as response:
            assert response.status_code == 200
            stream, data = events(response), ""
            while '"worker"' not in data:  # presence events first; counters come every second
                data = (await asyncio.wait_for(next_data_event(stream), 15)).data

        metrics = (await http.get("/metrics")).text
    assert 'asgi_rt_connections_total{outcome="accepted",route="/ws/{room}"}' in metrics


async def test_per_client_limits_count_the_clients_behind_nginx(deployed: int) -> None:
    port, opened, refused = deployed, [], None
    try:
        for _ in range(2 * PER_CLIENT + 1):  # two workers: at most 2 * PER_CLIENT accepted
            try:
                opened.append(await login(port, "alice-token", source="127.0.0.2"))
            except websockets.InvalidStatus as exc:
                refused = exc.response.status_code
                break
        assert refused == 429, (refused, len(opened))
        other = await login(port, "bob-token", source="127.0.0.3")  # another client: welcome
        await other.close()
    finally:
        for ws in opened:
            await ws.close()
