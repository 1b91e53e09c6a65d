"""A slow consumer closed 1013 by the overflow policy: telemetry counts every frame the app
sent it, direct or wrapped. A send cut off by the close counts too (as the wrapper has always
counted it, in ``finally``), so the close record is the frames on the wire or one more."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ..._server import RunningServer, wait_for
from ._stack import Stack, login, read_all

pytestmark = pytest.mark.server


@pytest.mark.parametrize("ws", ["websockets", "websockets-sansio", "wsproto"])
@pytest.mark.parametrize("direct", [False, True])
def test_slow_consumer_frames_counted_as_sent(
    serve: Callable[..., RunningServer], ws: str, direct: bool
) -> None:
    stack = Stack(direct=direct, queue_size=4)
    server = serve(stack.app, ws=ws, lifespan="on", sndbuf=None)
    fast = login(server, token="fast")
    slow = login(server, token="slow", rcvbuf=4096)
    try:
        wait_for(lambda: len(stack.rooms) == 2, what="two members")
        fast.send_text("burst:200:65536")
        fast_frames = [fast.next_frame(timeout=20) for _ in range(200)]
        assert all(f is not None and f[0] == 0x1 for f in fast_frames)
        slow_frames, close, after = read_all(slow)
        assert close == (1013, "slow consumer"), close
        assert after == b""
        fast.send_text("close")
        read_all(fast)
        wait_for(lambda: len(stack.rooms) == 0, what="released")
        wait_for(lambda: len(stack.close_records()) == 2, what="close records")
        records = {r["websocket.close.code"]: r for r in stack.close_records()}
        on_wire = len(slow_frames) + 1  # + auth_ok
        counted = records[1013]["websocket.messages.sent"]
        assert counted - on_wire in (0, 1), (
            f"telemetry says {counted} sent, the client got {on_wire}"
        )
        out = stack.out_metrics()
        total = out['asgi_rt_messages_total{direction="out",route="/ws/{room}",type="text"}']
        assert total == counted + 201
        assert out['asgi_rt_send_duration_seconds_count{route="/ws/{room}"}'] == total
        assert stack.rooms.stats().send_errors == 0
    finally:
        fast.close()
        slow.close()
