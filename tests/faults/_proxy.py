"""A TCP fault proxy of ours between the workers and redis-server, switchable while running.

It runs its own asyncio loop in a thread, so a test controls it from the test process
while the servers under test (separate uvicorn processes) connect through it. Modes:

- ``pass``: forward every chunk as it comes;
- ``latency``: forward each chunk ``latency`` seconds after it came (order kept);
- ``blackhole``: a partition without a reset: sockets stay open, nothing is read or
  forwarded (the kernel buffers fill, as they would behind a dead link) until another
  mode resumes the flow, when what was held moves on, as TCP's retransmission would.

Besides a mode: :meth:`reset` aborts every current connection with RST on both sides
(SO_LINGER 0), wherever their commands are; :meth:`cut_reply` does it at the worst moment:
once a command containing a pattern has reached Redis and before its reply gets back (the
command applied, its sender cannot know); :meth:`refuse` stops listening, so that new
connections are refused, until ``refuse(False)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .._system import free_port

__all__ = ["FaultProxy"]

MODES = ("pass", "latency", "blackhole")
T = TypeVar("T")
Pair = tuple[asyncio.StreamWriter, asyncio.StreamWriter]


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """``FaultProxy(target_port)``: listens on ``port`` and forwards to the target."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host, self.target_port = host, target_port
        self.port = free_port()
        self.mode = "pass"
        self.latency = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy",
                                        daemon=True)  # fmt: skip
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._pairs: set[Pair] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._cut_pattern: bytes | None = None
        self._cut_pair: Pair | None = None  # its next reply is swallowed, then all reset
        self.cut = threading.Event()  # set once cut_reply has fired

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        self._thread.start()
        self._call(self._start)

    def stop(self) -> None:
        self._call(self._stop)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def set_mode(self, mode: str, latency: float = 0.0) -> None:
        """Switch to ``pass``, ``latency`` (``latency`` seconds per chunk) or ``blackhole``."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")

        async def switch() -> None:
            assert self._flowing is not None
            self.mode, self.latency = mode, latency
            if mode == "blackhole":
                self._flowing.clear()
            else:
                self._flowing.set()

        self._call(switch)

    def reset(self) -> int:
        """RST every current connection, both sides; the number of connections reset."""
        return self._call(self._reset)

    def cut_reply(self, pattern: bytes) -> None:
        """Once: let the next command containing ``pattern`` reach Redis, swallow its reply
        and RST every connection (``cut`` is set then)."""

        async def arm() -> None:
            self.cut.clear()
            self._cut_pattern = pattern

        self._call(arm)

    def refuse(self, refusing: bool = True) -> None:
        """Stop listening (new connections are refused), or listen again on the same port."""
        self._call(self._close_listener if refusing else self._listen)

    def _call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(10)

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        await self._listen()

    async def _stop(self) -> None:
        await self._close_listener()
        await self._reset()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, self.host, self.port, reuse_address=True
            )

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()  # not wait_closed(): it would wait for every connection
            self._server = None

    async def _reset(self) -> int:
        pairs, self._pairs = list(self._pairs), set()
        for down, up in pairs:
            _rst(down)
            _rst(up)
        return len(pairs)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            await self._flowing.wait()  # a partition holds new connections too
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            _rst(writer)  # the target is down: the client sees a reset, as without us
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        pumps = [self._spawn(self._pump(reader, up_writer, pair, upstream=True)),
                 self._spawn(self._pump(up_reader, writer, pair))]  # fmt: skip
        await asyncio.gather(*pumps, return_exceptions=True)
        self._pairs.discard(pair)

    def _cutting(self, chunk: bytes, pair: Pair, upstream: bool) -> bool:
        """Arm on the command (it goes on); ``True`` for the reply that must not."""
        if upstream and self._cut_pattern is not None and self._cut_pattern in chunk:
            self._cut_pattern, self._cut_pair = None, pair
        elif not upstream and self._cut_pair is pair:
            self._cut_pair = None
            return True
        return False

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    pair: Pair, upstream: bool = False) -> None:  # fmt: skip
        """Copy ``src`` to ``dst`` chunk by chunk, as the mode says; a reset on one side is
        passed on as a reset, an EOF as a close."""
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                chunk = await src.read(65536)
                if not chunk:
                    break
                await self._flowing.wait()  # a chunk read just before a partition is held
                if self.mode == "latency":
                    await asyncio.sleep(self.latency)  # the injected fault itself
                if self._cutting(chunk, pair, upstream):
                    await self._reset()
                    self.cut.set()
                    return
                dst.write(chunk)
                await dst.drain()
        except OSError:
            for writer in pair:
                _rst(writer)
            return
        dst.close()
