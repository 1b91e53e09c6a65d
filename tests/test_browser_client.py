"""The browser client (clients/js, npm asgi-rt-client) in a real headless Chromium against
real uvicorn processes of tests/_client_app.py on a real redis-server: chat, resume after a
server is killed, discontinuity after Redis loses the history, no retry after 1008, token
refresh on expiry, and SSE when WebSockets cannot connect.

The pages load clients/js/dist (``make js`` builds it; ``make test`` runs that first).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import websockets
from playwright.async_api import Browser, Page

from ._poll import await_for, await_true
from ._redis import RedisServer
from ._system import free_port, listening, require_client_bundle, spawn_uvicorn
from .test_browser import chromium

pytestmark = [pytest.mark.anyio, pytest.mark.server]

WAIT_MS = 30_000  # the longest a page may take to (re)connect on a loaded machine
SETUP = """async ([token, extra]) => {
  const A = window.AsgiRt;
  const log = window.log = {got: [], disc: [], closed: [], down: [], here: [], tokens: 0};
  const client = window.client = new A.RtClient({
    url: A.roomUrl(`ws://${location.host}/ws`), baseMs: 200, capMs: 2000,
    getToken: () => (log.tokens += 1, token.endsWith("-") ? token + log.tokens : token),
    sseAfter: 2, sseUrl: extra.sse ? (room, at) => `/events/${room}`
      + (at ? `?since=${at.seq}&epoch=${at.epoch}` : "") : undefined,
  });
  client.subscribe("lobby", {
    message: (d) => log.got.push(d), discontinuity: (d) => log.disc.push(d),
    presence: (e) => log.here.push([e.event, e.member.user]),
  });
  client.on("closed", (e) => log.closed.push(e));
  client.on("disconnected", (e) => log.down.push(e));
  client.connect();
}"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Playwright's async API runs on asyncio only


@pytest.fixture(autouse=True)
def bundle() -> None:
    require_client_bundle()


class AppServer:
    """``uvicorn tests._client_app:app`` in a subprocess, killable and restartable on one port."""

    def __init__(self, backend: str, log: Path, *args: str) -> None:
        self.port, self.args, self.log = free_port(), args, log
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "ASGI_RT_TEST_BACKEND": backend}
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:  # the child keeps its own copy of the descriptor
            proc = self.proc = spawn_uvicorn("tests._client_app:app", self.port, *self.args,
                                             env=self.env, stderr=log.fileno())  # fmt: skip
        await await_for(lambda: listening(self.port) or proc.poll() is not None, 30, "uvicorn")
        assert proc.poll() is None, f"uvicorn exited with {proc.returncode}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def servers(redis_server: RedisServer, tmp_path: Path) -> Iterator[list[AppServer]]:
    """Two workers on one Redis: pages on the first, the test publishes through the second.
    Whatever the pages did, neither may log a server error."""
    made = [AppServer(redis_server.url, tmp_path / f"uvicorn-{n}.log") for n in (1, 2)]
    yield made
    for server in made:
        server.kill()
        log = server.log.read_text() if server.log.exists() else ""
        assert "Exception in ASGI application" not in log and "Traceback" not in log, log


@asynccontextmanager
async def publisher(
    server: AppServer, room: str = "lobby"
) -> AsyncIterator[websockets.ClientConnection]:
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws/{room}") as ws:
        await ws.send(json.dumps({"type": "auth", "token": "bob-token"}))
        assert json.loads(await ws.recv()) == {"type": "auth_ok"}
        yield ws


async def say(ws: websockets.ClientConnection, data: Any) -> bool:
    """Publish ``data`` through the ``say`` route; whether it was acked (not an error)."""
    await ws.send(json.dumps({"type": "say", "data": data, "id": "p"}))
    while (frame := json.loads(await ws.recv())).get("id") != "p":
        pass
    return bool(frame["type"] == "ack")


async def open_client(browser: Browser, server: AppServer, token: str, **extra: Any) -> Page:
    page = await (await browser.new_context()).new_page()
    await page.goto(server.url)
    await page.wait_for_function("window.AsgiRt !== undefined")
    await page.evaluate(SETUP, [token, extra])
    await connected(page)
    return page


async def connected(page: Page) -> None:
    await page.wait_for_function("window.client.state === 'connected'", timeout=WAIT_MS)


async def got(page: Page, count: int) -> list[Any]:
    await page.wait_for_function(f"window.log.got.length >= {count}", timeout=WAIT_MS)
    return list(await page.evaluate("window.log.got"))


@pytest.mark.timeout(120)
async def test_two_pages_chat_and_resume_after_the_server_is_killed(
    servers: list[AppServer],
) -> None:
    front, back = servers
    await front.start()
    await back.start()
    async with chromium() as browser, publisher(back) as ws:
        alice = await open_client(browser, front, "alice-token")
        bob = await open_client(browser, front, "bob-token")
        assert await alice.evaluate("client.request('say', 'hi bob', {timeout: 10000})") == {
            "ok": True
        }
        assert await got(bob, 1) == ["hi bob"]
        for n in range(1, 11):
            assert await say(ws, n)
        front.kill()  # mid-stream: no close frame, the pages see 1006
        for n in range(11, 21):
            assert await say(ws, n)
        await front.start()
        for n in range(21, 31):
            assert await say(ws, n)
        expected = ["hi bob", *range(1, 31)]
        for page in (alice, bob):
            assert await got(page, 31) == expected  # nothing lost, nothing twice, in order
            await connected(page)
            assert await page.evaluate("log.disc") == []
        assert ["join", "bob"] in await alice.evaluate("log.here")  # presence, too


@pytest.mark.timeout(120)
async def test_pages_are_told_of_a_discontinuity_when_redis_loses_the_history(
    servers: list[AppServer], redis_server: RedisServer
) -> None:
    front, back = servers
    await front.start()
    await back.start()
    async with chromium() as browser:
        page = await open_client(browser, front, "alice-token")
        async with publisher(back) as ws:
            assert await say(ws, "before")
        assert await got(page, 1) == ["before"]
        redis_server.stop()
        redis_server.start()  # no persistence: the room's history and epoch are gone
        async with publisher(back) as ws:
            await await_for_async(lambda: say(ws, "after"), "a publish after the Redis restart")
        await page.wait_for_function("log.disc.length >= 1", timeout=WAIT_MS)
        disc = await page.evaluate("log.disc[0]")
        assert disc["room"] == "lobby" and disc["reason"] in {"epoch changed", "unknown epoch"}
        assert (await got(page, 2))[-1] == "after"


async def await_for_async(probe: Any, what: str) -> None:
    await await_true(probe, timeout=30, what=what, interval=0.2)


async def test_a_refused_token_closes_1008_and_is_not_retried(servers: list[AppServer]) -> None:
    front = servers[0]
    await front.start()
    async with chromium() as browser:
        page = await (await browser.new_context()).new_page()
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        await page.goto(front.url)
        await page.wait_for_function("window.AsgiRt !== undefined")
        await page.evaluate(SETUP, ["stolen-token", {}])
        await page.wait_for_function("window.client.state === 'closed'", timeout=WAIT_MS)
        assert await page.evaluate("log.closed") == [{"code": 1008, "reason": "auth failed"}]
        assert len(sockets) == 1 and await page.evaluate("log.tokens") == 1


async def test_an_expired_token_is_replaced_by_a_fresh_one(servers: list[AppServer]) -> None:
    front, back = servers
    await front.start()
    await back.start()
    async with chromium() as browser:
        page = await open_client(browser, front, "short-")  # each expires after 2 s
        await page.wait_for_function("log.tokens >= 2", timeout=WAIT_MS)
        await connected(page)
        down = await page.evaluate("log.down[0]")
        assert (down["code"], down["reason"], down["delayMs"]) == (1008, "token expired", 0)
        async with publisher(back) as ws:
            assert await say(ws, "still here")
        assert await got(page, 1) == ["still here"]
        assert await page.evaluate("log.closed") == []


async def test_sse_delivers_when_websockets_cannot_connect(servers: list[AppServer]) -> None:
    front, back = servers
    front.args = ("--ws", "none")  # as behind a proxy that strips the Upgrade header
    await front.start()
    await back.start()
    async with chromium() as browser:
        page = await open_client(browser, front, "alice-token", sse=True)
        assert await page.evaluate("client.transport") == "sse"
        async with publisher(back) as ws:
            for n in range(3):
                await await_for_async(lambda n=n: say_once(page, ws, n), "SSE delivery")
        assert await got(page, 3) == [0, 1, 2]


async def say_once(page: Page, ws: websockets.ClientConnection, n: int) -> bool:
    """Publish ``n`` unless the page has it (the SSE stream may still be joining)."""
    if n in await page.evaluate("log.got"):
        return True
    await say(ws, n)
    return False


async def test_the_starlette_dashboard_plots_each_series(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "ASGI_RT_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}"}
    with (tmp_path / "uvicorn.log").open("ab") as log:
        proc = spawn_uvicorn("examples.starlette_app.app:app", port, env=env, stderr=log.fileno())
    try:
        await await_for(lambda: listening(port) or proc.poll() is not None, 30, "uvicorn")
        async with (
            chromium() as browser,
            websockets.connect(f"ws://127.0.0.1:{port}/ws/lobby") as ws,
        ):
            await ws.send(json.dumps({"type": "auth", "token": "alice-token"}))
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{port}/dashboard")
            for name in ("messages", "connections", "queued", "drops"):
                label = page.locator(f"#chart-{name} figcaption span")
                await page.wait_for_function(
                    f"document.querySelector('#chart-{name} figcaption span').textContent"
                    " !== ''", timeout=WAIT_MS)  # fmt: skip
                assert await label.text_content() not in {"", "-"}
            painted = await page.evaluate("""() => {
              const c = document.querySelector('#chart-connections canvas');
              const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              return px.some((v, i) => i % 4 === 3 && v > 0);
            }""")
            assert painted
    finally:
        proc.terminate()
        proc.wait(30)
    assert "Traceback" not in (tmp_path / "uvicorn.log").read_text()


MUX = """() => {
  const A = window.AsgiRt, got = window.got = {lobby: [], news: []};
  const client = window.client = new A.RtClient({url: `ws://${location.host}/mux`,
    multiplex: true, getToken: () => "alice-token", baseMs: 200, capMs: 2000});
  for (const room of ["lobby", "news"]) {
    client.subscribe(room, {message: (d) => got[room].push(d), presence: () => {}});
  }
  client.connect();
}"""


async def test_one_socket_carries_two_rooms_and_resumes_both(servers: list[AppServer]) -> None:
    front, back = servers
    await front.start()
    await back.start()
    async with (chromium() as browser, publisher(back) as lobby,
                publisher(back, "news") as news):  # fmt: skip
        page = await (await browser.new_context()).new_page()
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        await page.goto(front.url)
        await page.wait_for_function("window.AsgiRt !== undefined")
        await page.evaluate(MUX)
        await page.wait_for_function("client.state === 'connected'", timeout=WAIT_MS)
        for room in ("lobby", "news"):  # joined: the page is a member, publications reach it
            await page.wait_for_function(f"client.positions().get('{room}') !== undefined")
        assert await say(news, "first")
        assert await say(lobby, 1)
        front.kill()
        assert await say(lobby, 2) and await say(news, "second")
        await front.start()
        await page.wait_for_function("got.lobby.length >= 2 && got.news.length >= 2",
                                     timeout=WAIT_MS)  # fmt: skip
        assert await page.evaluate("got") == {"lobby": [1, 2], "news": ["first", "second"]}
        assert all(url.endswith("/mux") for url in sockets)  # no room in any URL
