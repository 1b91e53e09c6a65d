"""The SSE fan-out client process: N subscribers, one publisher, a closed loop of broadcasts.

Run by ``bench.sse`` as ``python -m bench._sse_client '<json config>'``; prints one JSON
line with the results. The loop and the payload are ``bench._broadcast_client``'s, as for
``bench._fanout_client``: broadcast ``i`` (``%07d`` sequence number, ``perf_counter_ns``
publish time, padding) is POSTed to ``/pub`` once every healthy subscriber has event
``i - 1``; latency is receive time minus publish time on this process's clock.

Subscribers are raw non-blocking sockets on ``bench._wsclient``'s epoll ``Reactor``:
``GET /events``, then the response head, the chunked transfer coding (or an identity
body), and the ``text/event-stream`` format: lines end with CRLF, LF or CR, a blank line
dispatches an event, ``data:`` lines are joined with LF, ``event:`` names it, comments
and other fields are skipped, an event without data is not dispatched. (A lone CR at
the end of what has arrived is held back until the next byte shows whether it was
half of a CRLF.)
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._broadcast_client import BroadcastClient, Config, PhaseSpec, Stalled, main
from ._wsclient import Reactor, WSConn, status_line

EventHandler = Callable[["SSEConn", bytes, bytes, int], None]

MESSAGE = b"message"
SUBSCRIBE = b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"


@dataclass
class SSEConfig(Config):
    phase_limit: float = 90.0


class SSEConn(WSConn):
    """One ``text/event-stream`` response being read."""

    __slots__ = ("_chunked", "_text", "close_event", "ended", "on_event")

    def __init__(self, reactor: Reactor, sock: socket.socket, on_event: EventHandler, tag: str):
        super().__init__(reactor, sock, None, tag)
        self.on_event = on_event
        self._chunked = False
        self._text = b""  # body bytes not yet split into events
        self.ended = False  # the last chunk arrived: the server ended the body cleanly
        self.close_event: bytes | None = None  # the data of an ``event: close``

    def refusal(self, head: bytes) -> str | None:
        lower = head.lower()
        if not lower.startswith(b"http/1.1 200"):
            return f"refused: {status_line(head)!r}"
        self._chunked = b"\r\ntransfer-encoding: chunked" in lower
        return None

    def feed(self, data: bytes, now: int) -> None:
        if self._buf or self._handshake:
            data = self._unbuffer(data)
        if self._chunked:
            data = self._dechunk(data)
        if data:
            self._split(data, now)

    def _dechunk(self, data: bytes) -> bytes:
        """The chunk payloads in ``data``; an incomplete chunk waits in ``_buf``."""
        parts = []
        pos, n = 0, len(data)
        while pos < n and not self.ended:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(data[pos:eol].split(b";", 1)[0], 16)
            if size == 0:  # last chunk (trailers are not used here)
                self.ended = True
                pos = n
                break
            start = eol + 2
            if start + size + 2 > n:
                break
            parts.append(data[start : start + size])
            pos = start + size + 2
        if pos < n:
            self._buf = data[pos:]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _split(self, data: bytes, now: int) -> None:
        text = self._text + data if self._text else data
        held = b""
        if b"\r" in text:
            if text[-1] == 13:  # maybe the first half of a CRLF: decide with the next byte
                text, held = text[:-1], b"\r"
            text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        pos = 0
        while True:
            blank = text.find(b"\n\n", pos)
            if blank < 0:
                break
            self._dispatch(text[pos:blank], now)
            pos = blank + 2
        self._text = text[pos:] + held if pos or held else text

    def _dispatch(self, block: bytes, now: int) -> None:
        if block.startswith(b"data: ") and block.find(b"\n") < 0:  # the usual one-line event
            self.frames += 1
            self.on_event(self, MESSAGE, block[6:], now)
            return
        data: list[bytes] = []
        event = MESSAGE
        for line in block.split(b"\n"):
            if not line or line[0] == 58:  # blank (a leading one) or ":" comment
                continue
            name, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                data.append(value)
            elif name == b"event":
                event = value
        if data:
            self.frames += 1
            self.on_event(self, event, b"\n".join(data), now)


class PubConn(WSConn):
    """A keep-alive connection POSTing broadcasts; counts the ``204`` answers."""

    __slots__ = ("answered", "failed")

    def __init__(self, reactor: Reactor, sock: socket.socket, tag: str):
        super().__init__(reactor, sock, None, tag)
        self.opened = True
        self.answered = 0
        self.failed: list[str] = []

    def post(self, path: bytes, body: bytes) -> None:
        head = b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n"
        self.write(head % (path, len(body)) + body)

    def feed(self, data: bytes, now: int) -> None:
        data = self._buf + data if self._buf else data
        self._buf = b""
        while True:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                break
            head, data = data[:end], data[end + 4 :]
            self.answered += 1
            if not head.startswith(b"HTTP/1.1 204"):  # bodies of errors are not parsed
                self.failed.append(head[:200].decode(errors="replace"))
        self._buf = data


class SSEClient(BroadcastClient):
    stall_drain = 5.0
    trace_rss = True

    # event handlers (the hot path) ---------------------------------------------------------

    def on_event(self, conn: SSEConn, event: bytes, data: bytes, now: int) -> None:
        if event != MESSAGE:
            if event == b"close":
                conn.close_event = data
            return
        self.deliver(conn, int(data[:7]), now)

    def on_stalled_event(self, conn: SSEConn, event: bytes, data: bytes, now: int) -> None:
        if event != MESSAGE:
            if event == b"close":
                conn.close_event = data
            return
        self.stalled_got(int(data[:7]))

    # connections ---------------------------------------------------------------------------

    def open(self, port: int, role: str, n: int, rcvbuf: int | None = None) -> list[WSConn]:
        handler = self.on_stalled_event if role == "stalled" else self.on_event
        conns: list[WSConn] = [self._subscribe(port, handler, role, rcvbuf) for _ in range(n)]
        return self.reactor.wait_ready(
            conns, role, timed_out="response heads timed out", failed="subscription failed"
        )

    def _subscribe(
        self, port: int, handler: EventHandler, role: str, rcvbuf: int | None
    ) -> SSEConn:
        def make(sock: socket.socket) -> SSEConn:
            return SSEConn(self.reactor, sock, handler, role)

        conn = self.reactor.connect(port, make, rcvbuf=rcvbuf)
        conn.write(SUBSCRIBE)
        return conn

    def open_publisher(self) -> WSConn:
        return self.reactor.connect(
            self.cfg.port, lambda sock: PubConn(self.reactor, sock, "publisher")
        )

    def publish(self, body: bytes) -> None:
        assert isinstance(self.publisher, PubConn)
        self.publisher.post(b"/pub", body)

    def phase_extras(self, spec: PhaseSpec) -> dict[str, Any]:
        publisher = self.publisher
        assert isinstance(publisher, PubConn)
        return {"publish_answers": publisher.answered, "publish_failures": publisher.failed[:3]}

    def stalled_end(self, stalled: Stalled, first: int) -> dict[str, Any]:
        conn = stalled.conn
        assert isinstance(conn, SSEConn)
        close = conn.close_event
        return {
            "last_seq_offset": stalled.seq_last - first,
            "close_event": None if close is None else close.decode(),
            "body_ended": conn.ended,
        }


if __name__ == "__main__":
    main(SSEClient, SSEConfig)
