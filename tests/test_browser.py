"""The FastAPI example's page in a real headless Chromium (Debian's ``chromium``) against a
real uvicorn process and a real redis-server: chat, survive a server restart, resume.

Playwright cannot download a browser here, so it drives ``/usr/bin/chromium``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

from ._poll import await_for
from ._redis import RedisServer
from ._system import free_port, listening, require_binary, require_client_bundle, spawn_uvicorn

pytestmark = [pytest.mark.anyio, pytest.mark.server]

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
WAIT_MS = 30_000  # the longest a page may take to (re)connect: backoff is capped at 10 s


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Playwright's async API runs on asyncio only


class ChatServer:
    """``uvicorn examples.fastapi_app.app:app`` in a subprocess, restartable on one port."""

    def __init__(self, backend: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "ASGI_RT_BACKEND": backend, "ASGI_RT_ALLOWED_ORIGINS": self.url}
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        proc = self.proc = spawn_uvicorn("examples.fastapi_app.app:app", self.port, env=self.env)
        await await_for(lambda: listening(self.port) or proc.poll() is not None, 30, "uvicorn")
        assert proc.poll() is None, f"uvicorn exited with {proc.returncode}"

    async def stop(self) -> None:
        """SIGTERM, as a deploy does; uvicorn closes every socket (1012) and exits."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            await await_for(lambda: proc.poll() is not None, 30, "uvicorn to exit")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(autouse=True)
def bundle() -> None:
    require_client_bundle()  # the example page loads it


@pytest.fixture
def chat_server(redis_server: RedisServer) -> Iterator[ChatServer]:
    """The example on the Redis backplane, so room history outlives the app process."""
    server = ChatServer(redis_server.url)
    yield server
    server.kill()


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    executable = require_binary("chromium", "chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def open_chat(browser: Browser, url: str, token: str, room: str) -> Page:
    """A page in its own browser context (so it can be taken offline alone), joined."""
    page = await (await browser.new_context()).new_page()
    await page.goto(url)
    await page.fill("#token", token)
    await page.fill("#room", room)
    await page.click("#join")
    await expect_connected(page)
    return page


async def expect_connected(page: Page) -> None:
    await expect(page.locator("#status")).to_have_attribute(
        "data-state", "connected", timeout=WAIT_MS
    )


async def say(page: Page, text: str) -> None:
    await page.fill("#text", text)
    await page.click("#send")


def lines(page: Page, text: str) -> Locator:
    """The chat lines (not notices) on ``page`` that contain ``text``."""
    return page.locator("#messages li.msg", has_text=text)


@pytest.mark.timeout(120)
async def test_two_pages_chat_survive_a_restart_and_resume(
    chat_server: ChatServer, tmp_path: Path
) -> None:
    await chat_server.start()
    async with chromium() as browser:
        alice = await open_chat(browser, chat_server.url, "alice-token", "lobby")
        bob = await open_chat(browser, chat_server.url, "bob-token", "lobby")
        await say(alice, "hello from alice")
        await expect(bob.locator("#messages")).to_contain_text("hello from alice")
        await expect(alice.locator("#presence")).to_contain_text("bob")
        sockets: list[str] = []
        bob.on("websocket", lambda ws: sockets.append(ws.url))

        await chat_server.stop()
        for page in (alice, bob):
            await expect(page.locator("#status")).to_contain_text("reconnecting", timeout=WAIT_MS)
        await bob.context.set_offline(True)  # bob stays away while alice talks
        await chat_server.start()
        await expect_connected(alice)
        await say(alice, "while bob was away")
        await expect(alice.locator("#messages")).to_contain_text("while bob was away")
        await expect(bob.locator("#status")).not_to_have_attribute("data-state", "connected")

        await bob.context.set_offline(False)
        await expect_connected(bob)  # resumed with ?since=: the missed message is replayed
        assert "?since=" in sockets[-1], sockets
        await expect(lines(bob, "while bob was away")).to_have_count(1, timeout=WAIT_MS)
        await say(bob, "bob is back")
        await expect(alice.locator("#messages")).to_contain_text("bob is back", timeout=WAIT_MS)
        await expect(bob.locator("#messages")).to_contain_text("bob is back", timeout=WAIT_MS)
        for page in (alice, bob):  # "bob is back" came after any duplicate would have
            for text in ("hello from alice", "while bob was away", "bob is back"):
                await expect(lines(page, text)).to_have_count(1)
        await expect(alice.locator("#presence")).to_contain_text("bob", timeout=WAIT_MS)

        screenshot = tmp_path / "chat.png"
        await alice.screenshot(path=screenshot)
    await chat_server.stop()
    assert screenshot.stat().st_size > 0
    print(f"screenshot: {screenshot}")


async def test_a_refused_token_is_shown_and_not_retried() -> None:
    server = ChatServer("memory://")
    try:
        await server.start()
        async with chromium() as browser:
            page = await (await browser.new_context()).new_page()
            await page.goto(server.url)
            await page.fill("#token", "stolen-token")
            await page.click("#join")
            status = page.locator("#status")
            await expect(status).to_have_attribute("data-state", "closed", timeout=WAIT_MS)
            await expect(status).to_contain_text("auth failed")
            await expect(page.locator("#send")).to_be_disabled()
    finally:
        await server.stop()
        server.kill()


async def test_make_run_on_another_port_serves_a_page_that_chats() -> None:
    """``make run PORT=N``: HOST/PORT in the environment, no allowlist of our own."""
    server = ChatServer("memory://")
    server.env.pop("ASGI_RT_ALLOWED_ORIGINS")
    server.env.update(HOST="127.0.0.1", PORT=str(server.port))
    try:
        await server.start()
        async with chromium() as browser:
            alice = await open_chat(browser, server.url, "alice-token", "lobby")
            bob = await open_chat(browser, server.url, "bob-token", "lobby")
            await say(alice, "same port, same origin")
            await expect(lines(bob, "same port, same origin")).to_have_count(1)
    finally:
        await server.stop()
        server.kill()
