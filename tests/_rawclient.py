"""A raw-socket WebSocket client: completes the handshake, then reads only when told.

It is the stalled peer: with a small ``SO_RCVBUF`` and the server's ``SO_SNDBUF``
small too, the server's sends start to block after a few KiB instead of MiBs.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time

Headers = dict[str, str] | list[tuple[str, str]]


def _items(headers: Headers | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


def _lower(headers: Headers | None) -> set[str]:
    """Header names given explicitly replace the defaults (e.g. Sec-WebSocket-Version)."""
    return {name.lower() for name, _ in _items(headers)}


class RawClient:
    def __init__(self, port: int, path: str = "/ws", *, rcvbuf: int | None = 4096,
                 headers: Headers | None = None) -> None:  # fmt: skip
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        lines = [line for line in lines if line.split(":")[0].lower() not in _lower(headers)]
        lines += [f"{k}: {v}" for k, v in _items(headers)]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self._buf = b""
        self.eof = False
        while b"\r\n\r\n" not in self._buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("server closed during the handshake")
            self._buf += chunk
        head, _, self._buf = self._buf.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split(" ", 2)[1])
        self.headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def body(self) -> bytes:
        """The body of a refused handshake (per Content-Length)."""
        length = int(self.headers.get("content-length", "0"))
        while len(self._buf) < length:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self._buf += chunk
        return self._buf[:length]

    def send_text(self, text: str) -> None:
        self.sock.sendall(_mask_frame(0x1, text.encode()))

    def send_frame(self, opcode: int, payload: bytes) -> None:
        """One frame as given: a text frame (0x1) of invalid UTF-8, a binary frame (0x2)..."""
        self.sock.sendall(_mask_frame(opcode, payload))

    def next_frame(self, timeout: float = 10.0) -> tuple[int, bytes] | None:
        """The next frame the server sends, or ``None`` at EOF or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (frame := self._parse_one()) is None and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                return None
            if not chunk:
                self.eof = True
                return None
            self._buf += chunk
        return frame

    def read_frames(self, timeout: float = 10.0) -> list[tuple[int, bytes]]:
        """Read until the server's close frame or EOF (or ``timeout``); return (opcode, payload)."""
        frames: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = self._parse_one()
            if frame is not None:
                frames.append(frame)
                if frame[0] == 0x8:
                    return frames
                continue
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                self.eof = True
                break
            self._buf += chunk
        return frames

    def reset(self) -> None:
        """Abort the TCP connection with RST (SO_LINGER 0), as a crashed client would."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()

    def _parse_one(self) -> tuple[int, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        opcode, length, offset = buf[0] & 0x0F, buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, offset = struct.unpack("!H", buf[2:4])[0], 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, offset = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < offset + length:
            return None
        self._buf = buf[offset + length :]
        return opcode, buf[offset : offset + length]


def close_code(frames: list[tuple[int, bytes]]) -> int | None:
    for opcode, payload in frames:
        if opcode == 0x8:
            return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
    return None


def _mask_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
