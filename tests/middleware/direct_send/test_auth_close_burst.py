"""Auth closes (expiry, principal change) while a big burst is written to a slow reader."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from ..._server import RunningServer, wait_for
from ._stack import Stack, login, read_all

pytestmark = pytest.mark.server


@pytest.mark.parametrize("ws", ["websockets-sansio", "wsproto"])  # sansio: uvicorn's "auto"
@pytest.mark.parametrize("how", ["expiry", "principal"])
@pytest.mark.parametrize("direct", [False, True])
def test_no_data_after_auth_close_during_burst(
    serve: Callable[..., RunningServer], ws: str, how: str, direct: bool
) -> None:
    stack = Stack(direct=direct, queue_size=100_000, send_timeout=None)
    server = serve(stack.app, ws=ws, lifespan="on")
    fast = login(server, token="fast")
    slow = login(server, token="slow:1.0" if how == "expiry" else "slow:60", rcvbuf=4096)
    try:
        wait_for(lambda: len(stack.rooms) == 2, what="two members")
        fast.send_text("burst:300:65536")
        wait_for(lambda: stack.queued() > 0, what="the burst queued behind the slow reader")
        if how == "principal":
            slow.send_text(json.dumps({"type": "auth", "token": "grace:60"}))
        else:  # the slow reader's token expires 1 s after login, the burst still queued
            wait_for(lambda: stack.auth_stats["expired"] == 1, what="the token expired")
        frames, close, after = read_all(slow, timeout=30)
        expected = (1008, "token expired" if how == "expiry" else "principal changed")
        assert close == expected, (close, len(frames), slow.eof)
        assert after == b"", f"{len(after)} bytes after the close frame"
        assert 0 < len(frames) < 300
        wait_for(lambda: len(stack.rooms) <= 1, what="slow released")
        assert stack.rooms.stats().send_errors == 0
        records = [r for r in stack.close_records() if r["websocket.close.code"] == 1008]
        assert len(records) == 1
    finally:
        for _ in range(300):
            if fast.next_frame(timeout=2) is None:
                break
        fast.close()
        slow.close()
