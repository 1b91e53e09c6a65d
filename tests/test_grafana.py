"""The Grafana dashboard against a real Prometheus scraping the example app.

Every panel's PromQL (variables substituted) is evaluated through Prometheus' HTTP API
after a short scripted load, and must return data. Prometheus comes from Debian's
``prometheus`` package (the Makefile installs it); without it the test fails under
CI=true and is skipped elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from asgi_rt.__main__ import dashboard_json

from ._poll import await_for, await_true
from ._rawclient import RawClient
from ._redis import RedisServer
from ._server import RunningServer
from ._system import free_port, listening, require_binary, spawn_uvicorn

pytestmark = [pytest.mark.anyio, pytest.mark.server]

# Fed by the Redis backplane, which has not landed yet: no series exist for these.
NOT_YET_FED = {"Backplane lag p99", "Backplane listener up"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    binary = require_binary("prometheus", "prometheus")
    procs: list[subprocess.Popen[bytes]] = []
    log = (tmp_path / "prometheus.log").open("wb")

    def start(target_port: int) -> str:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: example\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        )
        port = free_port()
        procs.append(subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=log,
        ))  # fmt: skip
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)
    log.close()


async def _wait(
    client: httpx.AsyncClient, url: str, check: Callable[[Any], bool], what: str
) -> None:
    async def probe() -> bool:
        try:
            response = await client.get(url)
        except httpx.TransportError:
            return False
        return response.status_code == 200 and check(response)

    await await_true(probe, 30, what)


async def _login(url: str, token: str) -> websockets.ClientConnection:
    ws = await websockets.connect(url, max_queue=None)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    assert json.loads(await ws.recv()) == {"type": "auth_ok"}
    return ws


async def _scripted_load(port: int) -> None:
    url = f"ws://127.0.0.1:{port}/ws/lobby"
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(url, origin="https://evil.example")  # type: ignore[arg-type]
    async with websockets.connect(url) as intruder:
        await intruder.send(json.dumps({"type": "auth", "token": "stolen"}))
        with pytest.raises(websockets.ConnectionClosed):
            await intruder.recv()
    stalled = RawClient(port, "/ws/lobby", rcvbuf=4096)
    stalled.send_text(json.dumps({"type": "auth", "token": "carol-token"}))
    alice, bob = await _login(url, "alice-token"), await _login(url, "bob-token")
    for i in range(120):  # ~8 s at the example's rate limit, 1 KB each: fills the stalled peer
        await (alice if i % 2 else bob).send(json.dumps({"text": f"{i} " + "x" * 1000}))
        await asyncio.sleep(0.06)
    await asyncio.get_running_loop().run_in_executor(None, stalled.read_frames, 5.0)
    stalled.close()
    await alice.close()
    await bob.close()


async def test_every_panel_returns_data_from_real_prometheus(
    serve: Callable[..., RunningServer], prometheus: Callable[[int], str]
) -> None:
    from examples.fastapi_app.app import app

    server = serve(app, lifespan="on", sndbuf=4096)
    base = prometheus(server.port)
    async with httpx.AsyncClient(timeout=5) as client:
        await _wait(client, f"{base}/-/ready", lambda r: True, "prometheus to start")
        await _scripted_load(server.port)
        assert await _empty_panels(client, base, NOT_YET_FED) == []


async def test_every_panel_has_data_from_two_workers_in_multiprocess_mode(
    tmp_path: Path, redis_server: RedisServer, prometheus: Callable[[int], str]
) -> None:
    """The Deploying section's setup: --workers 2, PROMETHEUS_MULTIPROC_DIR, Redis."""
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
           "ASGI_RT_BACKEND": redis_server.url}  # fmt: skip
    port = free_port()
    server = spawn_uvicorn("examples.fastapi_app.app:app", port, "--workers", "2", env=env)
    try:
        await await_for(lambda: listening(port) or server.poll() is not None, 60, "uvicorn")
        assert server.poll() is None, f"uvicorn --workers 2 exited with {server.returncode}"
        base = prometheus(port)
        async with httpx.AsyncClient(timeout=5) as client:
            await _wait(client, f"{base}/-/ready", lambda r: True, "prometheus to start")
            await _scripted_load(port)
            assert await _empty_panels(client, base, set()) == []
    finally:
        server.terminate()
        server.wait(30)


async def _empty_panels(client: httpx.AsyncClient, base: str, exempt: set[str]) -> list[Any]:
    """After ten scrapes, the panels (title, query) whose query returns no series."""
    await _wait(client, f"{base}/api/v1/query?query=count_over_time(up[1m])",
                lambda r: _first_value(r.json()) >= 10, "ten scrapes")  # fmt: skip
    empty = []
    for title, expr in _panel_queries(json.loads(dashboard_json())):
        response = await client.get(f"{base}/api/v1/query", params={"query": expr})
        body = response.json()
        assert body["status"] == "success", (title, expr, body)
        if title not in exempt and not body["data"]["result"]:
            empty.append((title, expr))
    return empty


def _first_value(body: dict[str, Any]) -> float:
    result = body.get("data", {}).get("result", [])
    return float(result[0]["value"][1]) if result else 0.0


def _panel_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "route"}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$route", ".*")
            yield panel["title"], expr
