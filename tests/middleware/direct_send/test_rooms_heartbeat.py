"""Room broadcast, a member leaving, heartbeat pings: telemetry (direct) matches the wire."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from asgi_rt import Heartbeat

from ..._server import RunningServer, wait_for
from ._stack import Stack, login

pytestmark = pytest.mark.server


@pytest.mark.parametrize("direct", [False, True])
def test_rooms_leave_heartbeat(serve: Callable[..., RunningServer], direct: bool) -> None:
    stack = Stack(direct=direct, heartbeat=Heartbeat(interval=0.2, timeout=5))
    server = serve(stack.app, ws="websockets-sansio", lifespan="on")
    clients = [login(server, token=f"u{i}") for i in range(3)]
    wait_for(lambda: len(stack.rooms) == 3, what="members")
    got = [1, 1, 1]  # auth_ok
    clients[0].send_text("hello")
    for i, c in enumerate(clients):
        while (f := c.next_frame(timeout=5)) is not None:
            got[i] += 1
            if b"hello" in f[1]:
                break
    clients[1].send_text("leave")
    wait_for(lambda: len(stack.rooms.members("r")) == 2, what="u1 left the room")
    clients[0].send_text("again")
    for i, c in enumerate(clients):  # heartbeat pings reach everyone (room member or not)
        while (f := c.next_frame(timeout=5)) is not None:
            got[i] += 1
            if f[1] == b'{"type":"ping"}':
                break
        assert f is not None, f"u{i} got no heartbeat ping"
    for i, c in enumerate(clients):
        c.send_text('{"type":"pong"}')
        c.send_frame(0x8, struct.pack("!H", 1000))
        frames = c.read_frames(timeout=5)
        assert frames[-1][0] == 0x8
        got[i] += len(frames) - 1
        c.close()
    wait_for(lambda: len(stack.rooms) == 0, what="released")
    wait_for(lambda: len(stack.close_records()) == 3, what="records")
    sent = sorted(r["websocket.messages.sent"] for r in stack.close_records())
    assert sent == sorted(got)
    out = stack.out_metrics()
    assert out['asgi_rt_messages_total{direction="out",route="/ws/{room}",type="text"}'] == sum(got)
    assert out['asgi_rt_send_duration_seconds_count{route="/ws/{room}"}'] == sum(got)
    assert stack.rooms.stats().send_errors == 0
