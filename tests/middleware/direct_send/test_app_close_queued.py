"""The app closes (draining) while frames are queued to a slow reader; and manager shutdown."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ..._server import RunningServer, wait_for
from ._stack import Stack, login, read_all

pytestmark = pytest.mark.server


@pytest.mark.parametrize("ws", ["websockets", "websockets-sansio", "wsproto"])
@pytest.mark.parametrize("direct", [False, True])
def test_app_close_drains_queue(serve: Callable[..., RunningServer], ws: str, direct: bool) -> None:
    stack = Stack(direct=direct, queue_size=1000, send_timeout=None)
    server = serve(stack.app, ws=ws, lifespan="on")
    fast = login(server, token="fast")
    slow = login(server, token="slow", rcvbuf=4096)
    try:
        wait_for(lambda: len(stack.rooms) == 2, what="two members")
        fast.send_text("burst:60:65536")
        for _ in range(60):  # the whole burst is published (the fast reader has it) ...
            assert fast.next_frame(timeout=20) is not None
        wait_for(lambda: stack.queued() > 0, what="frames queued to the slow reader")
        slow.send_text("close")  # ... and the app closes while it is queued to the slow one
        frames, close, after = read_all(slow, timeout=30)
        assert close == (1000, "bye")
        assert len(frames) == 60
        assert after == b""
        wait_for(lambda: len(stack.rooms) == 1, what="slow released")
        assert stack.rooms.stats().send_errors == 0
        rec = [r for r in stack.close_records() if r["websocket.close.code"] == 1000]
        assert rec and rec[0]["websocket.messages.sent"] == 61
    finally:
        fast.close()
        slow.close()
