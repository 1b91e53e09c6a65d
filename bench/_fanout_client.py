"""The fan-out client process: N receivers, one publisher, a closed loop of broadcasts.

Run by ``bench.fanout`` as ``python -m bench._fanout_client '<json config>'``; prints one
JSON line with the results. The receivers and the publisher are WebSockets on raw sockets
(``bench._wsclient``); for the ``socketio`` variant they speak Engine.IO v4 / socket.io
over them. The phases and the closed loop are ``bench._broadcast_client``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._broadcast_client import BroadcastClient, Config, PhaseSpec, Stalled, main
from ._wsclient import FrameHandler, WSConn

SIO_OFFSET = len(b'42["msg","')  # where the payload starts in a socket.io event frame
SIO_PATH = "/socket.io/?EIO=4&transport=websocket"
_C0, _C2, _C4 = ord("0"), ord("2"), ord("4")
_BRACE = ord("{")


def sio_handler(deliver: Callable[[WSConn, int, int], None]) -> FrameHandler:
    """A socket.io peer's frame handler: each ``"msg"`` event's sequence number goes to
    ``deliver``; the Engine.IO open, ping and the CONNECT reply are answered or noted
    (``conn.ready``: the namespace is joined; the publisher joins with ``{"pub":1}``)."""

    def on_frame(conn: WSConn, data: bytes, start: int, end: int, now: int) -> None:
        first = data[start]
        if first == _C4:
            second = data[start + 1]
            if second == _C2:
                deliver(conn, int(data[start + SIO_OFFSET : start + SIO_OFFSET + 7]), now)
            elif second == _C0:  # CONNECT accepted
                conn.ready = True
        elif first == _C2:  # Engine.IO ping
            conn.send_text(b"3")
        elif first == _C0:  # Engine.IO open: join the default namespace
            conn.send_text(b'40{"pub":1}' if conn.tag == "publisher" else b"40")

    return on_frame


def send_broadcast(publisher: WSConn | None, body: bytes, sio: bool) -> None:
    """Publish ``body``: as is, or as a socket.io ``"pub"`` event."""
    assert publisher is not None
    publisher.send_text(b'42["pub","' + body + b'"]' if sio else body)


class FanoutClient(BroadcastClient):
    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.sio = cfg.variant == "socketio"
        self.offset = SIO_OFFSET if self.sio else 0
        self.on_sio_frame = sio_handler(self.deliver)

    # frame handlers (the hot path) ----------------------------------------------------------

    def on_frame(self, conn: WSConn, data: bytes, start: int, end: int, now: int) -> None:
        if data[start] == _BRACE:  # asgi_rt_stack's {"type":"auth_ok"}, before any broadcast
            return
        self.deliver(conn, int(data[start : start + 7]), now)

    def on_stalled_frame(self, conn: WSConn, data: bytes, start: int, end: int, now: int) -> None:
        if self.sio and data[start : start + 2] != b"42":
            self.on_sio_frame(conn, data, start, end, now)
            return
        self.stalled_got(int(data[start + self.offset : start + self.offset + 7]))

    # connections ---------------------------------------------------------------------------

    def open(self, port: int, role: str, n: int, rcvbuf: int | None = None) -> list[WSConn]:
        if self.sio:
            path = SIO_PATH
            handler = self.on_stalled_frame if role == "stalled" else self.on_sio_frame
        else:
            path = "/pub" if role == "publisher" else "/ws"
            handler = self.on_stalled_frame if role == "stalled" else self.on_frame
        conns = [self.reactor.open(port, path, handler, tag=role, rcvbuf=rcvbuf) for _ in range(n)]
        # socket.io: wait for the CONNECT reply ("40{...}"), i.e. the room is joined
        return self.reactor.wait_ready(conns, role, joined=self.sio)

    def open_publisher(self) -> WSConn:
        return self.open(self.cfg.port, "publisher", 1)[0]

    def publish(self, body: bytes) -> None:
        send_broadcast(self.publisher, body, self.sio)

    def phase_extras(self, spec: PhaseSpec) -> dict[str, Any]:
        return {"warmup": spec.warmup}

    def stalled_end(self, stalled: Stalled, first: int) -> dict[str, Any]:
        return {"close_code": stalled.conn.close_code}


if __name__ == "__main__":
    main(FanoutClient)
