"""A minimal, fast WebSocket client on a raw asyncio Protocol (benchmark use only).

One process must hold a thousand receivers, so this does only what a benchmark needs:
the HTTP/1.1 upgrade, parsing the server's (unmasked, unfragmented) frames, answering
pings, and writing masked client frames. Every complete data frame is handed to
``on_frame(client, data, start, end, now_ns)`` without copying the payload out.
"""

from __future__ import annotations

import asyncio
import base64
import os
import resource
import socket
import struct
import time
from collections.abc import Callable

__all__ = [
    "WSClient",
    "http_get",
    "mask_frame",
    "open_ws",
    "raise_nofile_limit",
]

FrameHandler = Callable[["WSClient", bytes, int, int, int], None]

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA
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


class WSClient(asyncio.Protocol):
    """One client connection. ``opened`` resolves after the 101 response."""

    __slots__ = (
        "_buf",
        "_handshake",
        "_request",
        "close_code",
        "closed",
        "frames",
        "last_seq",
        "misordered",
        "on_frame",
        "on_lost",
        "opened",
        "ready",
        "tag",
        "transport",
    )

    def __init__(
        self, host: str, port: int, path: str, on_frame: FrameHandler | None, tag: str = ""
    ) -> None:
        loop = asyncio.get_running_loop()
        key = base64.b64encode(os.urandom(16)).decode()
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self._buf = b""
        self._handshake = True
        self.on_frame = on_frame
        self.on_lost: Callable[[WSClient], None] | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.ready: asyncio.Future[None] = loop.create_future()  # for the caller's protocol
        self.close_code: int | None = None
        self.transport: asyncio.Transport | None = None
        self.frames = 0  # data frames received
        self.last_seq = -1  # for the benchmark's per-connection order check
        self.misordered = 0
        self.tag = tag

    # asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connection lost in handshake: {exc!r}"))
        if not self.closed.done():
            self.closed.set_result(None)
        if self.on_lost is not None:
            self.on_lost(self)

    def data_received(self, data: bytes) -> None:
        now = _perf_ns()
        if self._buf:
            data = self._buf + data
            self._buf = b""
        if self._handshake:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self._buf = data
                return
            status = data[: data.find(b"\r\n")]
            if b" 101 " not in status + b" ":
                self.opened.set_exception(ConnectionError(f"handshake refused: {status!r}"))
                assert self.transport is not None
                self.transport.close()
                return
            self._handshake = False
            self.opened.set_result(None)
            data = data[end + 4 :]
        n = len(data)
        pos = 0
        while n - pos >= 2:
            b0 = data[pos]
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
            opcode = b0 & 0x0F
            if opcode == OP_TEXT or opcode == OP_BINARY:
                self.frames += 1
                if self.on_frame is not None:
                    self.on_frame(self, data, start, end, now)
            elif opcode == OP_PING:
                self.write_frame(OP_PONG, data[start:end])
            elif opcode == OP_CLOSE:
                self._on_close(data[start:end])
            pos = end
        if pos < n:
            self._buf = data[pos:]

    # API --------------------------------------------------------------------------------

    def send_text(self, payload: bytes) -> None:
        self.write_frame(OP_TEXT, payload)

    def write_frame(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(mask_frame(opcode, payload))

    def pause_reading(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _on_close(self, payload: bytes) -> None:
        self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        self.write_frame(OP_CLOSE, payload[:2])
        if not self.closed.done():
            self.closed.set_result(None)
        assert self.transport is not None
        self.transport.close()


async def open_ws(
    port: int,
    path: str,
    on_frame: FrameHandler | None,
    *,
    host: str = "127.0.0.1",
    rcvbuf: int | None = None,
    tag: str = "",
    timeout: float = 20.0,
) -> WSClient:
    """Connect and complete the upgrade; ``rcvbuf`` sets ``SO_RCVBUF`` before connecting."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (host, port))
            _, client = await loop.create_connection(
                lambda: WSClient(host, port, path, on_frame, tag), sock=sock
            )
            await client.opened
    except BaseException:
        sock.close()
        raise
    return client


async def http_get(port: int, path: str, *, host: str = "127.0.0.1", timeout: float = 10.0) -> bytes:
    """GET ``path`` over a fresh HTTP/1.1 connection; return the body (status must be 200)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            raw = await reader.read()
        finally:
            writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"GET {path}: {head[:80]!r}")
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return body


def _unchunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)
