"""Scrape /metrics (in-loop, over HTTP) during heavy connection churn: counters never go down."""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from ..._server import RunningServer, wait_for
from ._stack import Stack, login, parse

pytestmark = pytest.mark.server


def test_counters_monotonic_under_churn(serve: Callable[..., RunningServer]) -> None:
    stack = Stack(direct=True, queue_size=8)
    server = serve(stack.app, ws="websockets-sansio", lifespan="on")
    problems: list[str] = []
    stop = threading.Event()
    scrapes = [0]

    def scraper() -> None:
        last: dict[str, float] = {}
        with httpx.Client() as http:
            while not stop.is_set():
                now = parse(http.get(f"http://127.0.0.1:{server.port}/metrics").text)
                scrapes[0] += 1
                for k, v in now.items():
                    if v < last.get(k, 0.0):
                        problems.append(f"{k}: {last[k]} -> {v}")
                for k in last:
                    if k not in now:
                        problems.append(f"{k} vanished")
                last.update(now)

    def member(i: int) -> None:
        client = login(server, token=f"u{i}", rcvbuf=4096 if i % 3 == 0 else None)
        client.send_text(f"burst:12:{i % 3000}")  # to every member: some overflow (1013)
        for _ in range(5 + i % 7):
            client.next_frame()
        if i % 2:
            client.send_frame(0x8, struct.pack("!H", 1000))
            client.read_frames(timeout=2)
            client.close()
        else:
            client.reset()

    t = threading.Thread(target=scraper)
    t.start()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(member, range(3000)))
    wait_for(lambda: len(stack.rooms) == 0, what="released", timeout=20)
    stop.set()
    t.join()
    assert scrapes[0] > 50
    assert problems == []
