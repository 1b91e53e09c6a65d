"""A minimal, fast WebSocket client: raw sockets driven by one epoll loop (benchmarks only).

One process must hold a thousand receivers and read 70k+ frames/s on one core, with
CPU to spare, or it caps what the benchmark can measure. Python 3.11's asyncio
transports cost too much per read for that (a callback chain per read, and
``sock.recv(256 KiB)``, which glibc serves with mmap/munmap: page faults per frame).
So this is a bare ``select.epoll`` loop over non-blocking sockets reading into one
shared buffer, doing only what a benchmark needs: the HTTP/1.1 upgrade, parsing the
server's (unmasked, unfragmented) frames, answering pings and close frames, and
writing masked client frames. Every complete data frame goes to
``on_frame(conn, data, start, end, now_ns)`` without copying the payload out.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import select
import socket
import struct
import time
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "Reactor",
    "WSConn",
    "http_get_json",
    "mask_frame",
    "raise_nofile_limit",
    "status_line",
]

FrameHandler = Callable[["WSConn", bytes, int, int, int], None]
Conn = TypeVar("Conn", bound="WSConn")

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA
RECV_SIZE = 262144

_perf_ns = time.perf_counter_ns


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard one; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def mask_frame(opcode: int, payload: bytes) -> bytes:
    """A complete client frame (FIN set, masked with a random key)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = os.urandom(4)
    if n == 0:
        return head + key
    stream = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return head + key + (int.from_bytes(payload, "big") ^ stream).to_bytes(n, "big")


def status_line(head: bytes) -> bytes:
    """The first line of an HTTP response ``head`` (which has at least one CRLF)."""
    return head[: head.find(b"\r\n")]


def http_get_json(port: int, path: str, *, timeout: float = 10.0) -> Any:
    """GET ``http://127.0.0.1:{port}{path}`` and decode the JSON body (blocking)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
        return json.loads(resp.read())


class WSConn:
    """One client connection's protocol state. Made by :meth:`Reactor.open`."""

    __slots__ = (
        "_buf",
        "_handshake",
        "close_code",
        "closed",
        "error",
        "fd",
        "frames",
        "gaps",
        "last_seq",
        "misordered",
        "on_frame",
        "on_lost",
        "opened",
        "paused",
        "reactor",
        "ready",
        "sock",
        "tag",
    )

    def __init__(
        self, reactor: Reactor, sock: socket.socket, on_frame: FrameHandler | None, tag: str
    ) -> None:
        self.reactor = reactor
        self.sock = sock
        self.fd = sock.fileno()
        self.on_frame = on_frame
        self.on_lost: Callable[[WSConn], None] | None = None
        self.tag = tag
        self._buf = b""
        self._handshake = True
        self.opened = False  # the 101 arrived
        self.ready = False  # for the caller's own protocol (e.g. socket.io CONNECT)
        self.closed = False
        self.paused = False
        self.error: str | None = None
        self.close_code: int | None = None
        self.frames = 0  # data frames received
        self.last_seq = -1  # the benchmark's per-connection order check: see track()
        self.misordered = 0
        self.gaps = 0

    def track(self, seq: int) -> bool:
        """Take ``seq`` as the latest sequence number this connection got.

        False if it repeats the last one; counts one that goes back (``misordered``) or
        skips ahead (``gaps``, not before the first).
        """
        last = self.last_seq
        if seq == last:
            return False
        if seq < last:
            self.misordered += 1
        elif seq > last + 1 and last >= 0:
            self.gaps += 1
        self.last_seq = seq
        return True

    def refusal(self, head: bytes) -> str | None:
        """Why the response ``head`` (through its first CRLF at least) refuses us, if it does."""
        if head.startswith(b"HTTP/1.1 101"):
            return None
        return f"handshake refused: {status_line(head)!r}"

    def _unbuffer(self, data: bytes) -> bytes:
        """What was held back, then ``data``, past the response head.

        ``b""`` while the head is incomplete (held back) or once it refused us (closed).
        """
        if self._buf:
            data = self._buf + data
            self._buf = b""
        if self._handshake:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self._buf = data
                return b""
            error = self.refusal(data[: end + 2])
            if error is not None:
                self.error = error
                self.reactor.close(self)
                return b""
            self._handshake = False
            self.opened = True
            data = data[end + 4 :]
        return data

    def feed(self, data: bytes, now: int) -> None:
        """Parse what the socket delivered: the 101 response, then frames."""
        if self._buf or self._handshake:
            data = self._unbuffer(data)
        n = len(data)
        pos = 0
        while n - pos >= 2:
            length = data[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > n:
                break
            opcode = data[pos] & 0x0F
            if opcode in (OP_TEXT, OP_BINARY):
                self.frames += 1
                if self.on_frame is not None:
                    self.on_frame(self, data, start, end, now)
            elif opcode == OP_PING:
                self.write_frame(OP_PONG, data[start:end])
            elif opcode == OP_CLOSE:
                payload = data[start:end]
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.write_frame(OP_CLOSE, payload[:2])
                self.reactor.close(self)
                return
            pos = end
        if pos < n:
            self._buf = data[pos:]

    def send_text(self, payload: bytes) -> None:
        self.write_frame(OP_TEXT, payload)

    def write_frame(self, opcode: int, payload: bytes) -> None:
        if not self.closed:
            self.write(mask_frame(opcode, payload))

    def write(self, data: bytes) -> None:
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.error = repr(exc)
            self.reactor.close(self)
            return
        if sent < len(data):  # rare: the server is not reading; block, bounded
            self.sock.settimeout(5.0)
            try:
                self.sock.sendall(data[sent:])
            except OSError as exc:
                self.error = repr(exc)
                self.reactor.close(self)
                return
            self.sock.setblocking(False)


class Reactor:
    """An epoll loop over :class:`WSConn` sockets."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.conns: dict[int, WSConn] = {}
        self.polls = 0  # epoll_wait calls and the events they returned: ~1 event per poll
        self.events = 0  # means the client keeps up with the server (see bench.fanout)
        # One receive buffer for all sockets: ``sock.recv(256 KiB)`` would malloc (mmap)
        # 256 KiB per call and shrink it, i.e. page faults and munmap per frame.
        self._view = memoryview(bytearray(RECV_SIZE))

    def connect(
        self,
        port: int,
        make: Callable[[socket.socket], Conn],
        *,
        rcvbuf: int | None = None,
        host: str = "127.0.0.1",
    ) -> Conn:
        """Connect (blocking, loopback is quick); ``make(sock)`` is read by :meth:`poll`."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(10.0)
        sock.connect((host, port))
        sock.setblocking(False)
        conn = make(sock)
        self.conns[conn.fd] = conn
        self.epoll.register(conn.fd, select.EPOLLIN)
        return conn

    def open(
        self,
        port: int,
        path: str,
        on_frame: FrameHandler | None,
        *,
        tag: str = "",
        rcvbuf: int | None = None,
        host: str = "127.0.0.1",
        extensions: str | None = None,
    ) -> WSConn:
        """Connect and send the upgrade request.

        The 101 is read by :meth:`poll`; wait for ``conn.opened``. ``extensions`` is sent as
        ``Sec-WebSocket-Extensions`` (e.g. a browser's ``permessage-deflate;
        client_max_window_bits``); frames the server then compresses are counted and handed
        to ``on_frame`` still compressed (RSV1 set).
        """
        conn = self.connect(
            port, lambda sock: WSConn(self, sock, on_frame, tag), rcvbuf=rcvbuf, host=host
        )
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
        )
        if extensions:
            request += f"Sec-WebSocket-Extensions: {extensions}\r\n"
        request += "\r\n"
        conn.write(request.encode())
        return conn

    def poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds and read every socket that is ready."""
        conns = self.conns
        view = self._view
        events = self.epoll.poll(timeout)
        self.polls += 1
        self.events += len(events)
        for fd, _ in events:
            conn = conns.get(fd)
            if conn is None:
                continue
            try:
                n = conn.sock.recv_into(view)
            except BlockingIOError:
                continue
            except OSError as exc:
                conn.error = repr(exc)
                self.close(conn)
                continue
            if n:
                conn.feed(view[:n].tobytes(), _perf_ns())
            else:
                self.close(conn)

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Poll until ``done()`` or ``timeout`` seconds; return ``done()``."""
        deadline = time.perf_counter() + timeout
        while not done():
            left = deadline - time.perf_counter()
            if left <= 0:
                return done()
            self.poll(min(left, 0.05))
        return True

    def wait_ready(
        self,
        conns: list[Conn],
        label: str,
        *,
        joined: bool = False,
        timed_out: str = "handshake timed out",
        failed: str = "connection failed",
        timeout: float = 20.0,
    ) -> list[Conn]:
        """Poll until every one of ``conns`` is open (``joined``: also ``ready``); return them.

        Raises:
            RuntimeError: ``"<label>: <timed_out>"`` after ``timeout`` seconds, or
                ``"<label>: <failed>: <error>"`` as soon as one of them has closed.
        """
        if not self.run_until(
            lambda: (
                all(c.ready if joined else c.opened for c in conns) or any(c.closed for c in conns)
            ),
            timeout,
        ):
            raise RuntimeError(f"{label}: {timed_out}")
        for c in conns:
            if c.closed:
                raise RuntimeError(f"{label}: {failed}: {c.error}")
        return conns

    def pause(self, conn: WSConn) -> None:
        """Stop reading ``conn`` (its kernel receive buffer then fills)."""
        if not conn.paused and not conn.closed:
            self.epoll.unregister(conn.fd)
            conn.paused = True

    def resume(self, conn: WSConn) -> None:
        if conn.paused and not conn.closed:
            self.epoll.register(conn.fd, select.EPOLLIN)
            conn.paused = False

    def close(self, conn: WSConn) -> None:
        if conn.closed:
            return
        conn.closed = True
        if not conn.paused:
            self.epoll.unregister(conn.fd)
        del self.conns[conn.fd]
        conn.sock.close()
        if conn.on_lost is not None:
            conn.on_lost(conn)
