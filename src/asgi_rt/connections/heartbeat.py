"""App-level heartbeat and idle timeout, swept by one task per manager.

Protocol ping/pong is the server's job (uvicorn ``--ws-ping-interval``); it cannot see an
application that hung while its socket stays healthy, and some proxies answer protocol
pings themselves. With a :class:`Heartbeat` the manager sends ``{"type": "ping"}`` every
``interval`` seconds; the client must answer ``{"type": "pong"}`` (or send any frame)
within ``timeout``, else the connection is closed **4001 "heartbeat timeout"**. With
``idle_timeout``, a connection that sends nothing for that long is closed **4000 "idle
timeout"**. Both need the manager to be running (``async with manager``): one task sweeps
every connection, so an idle connection costs no task of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from .._json import loads
from ..types import WebSocketSendEvent
from .state import ConnectionState
from .stats import ManagerStats

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["IDLE_CLOSE", "PING", "TIMEOUT_CLOSE", "Heartbeat", "is_pong", "sweep_forever"]

PING: WebSocketSendEvent = {"type": "websocket.send", "text": '{"type":"ping"}'}
IDLE_CLOSE = (4000, "idle timeout")
TIMEOUT_CLOSE = (4001, "heartbeat timeout")


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Send ``{"type": "ping"}`` every ``interval`` s; expect a frame within ``timeout`` s."""

    interval: float = 25.0
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.interval > 0 or not self.timeout > 0:
            raise ValueError(f"interval and timeout must be > 0, got {self}")


async def sweep_forever(
    connections: Iterable[Connection], heartbeat: Heartbeat | None,
    idle_timeout: float | None, stats: ManagerStats,
) -> None:  # fmt: skip
    """Check every connection a few times per interval; never returns."""
    periods = [p for p in (heartbeat and heartbeat.timeout, idle_timeout) if p]
    tick = max(0.05, min(periods) / 4)
    while True:
        await anyio.sleep(tick)
        now = time.monotonic()
        for conn in list(connections):
            sweep(conn, now, heartbeat, idle_timeout, stats)


def is_pong(data: str | bytes) -> bool:
    """Whether a frame is ``{"type": "pong"}`` (any JSON spacing); cheap for other frames."""
    if not isinstance(data, str) or len(data) > 64 or '"pong"' not in data:
        return False
    try:
        return bool(loads(data) == {"type": "pong"})
    except ValueError:
        return False


def sweep(
    conn: Connection, now: float, heartbeat: Heartbeat | None, idle: float | None,
    stats: ManagerStats,
) -> None:  # fmt: skip
    if conn.state is not ConnectionState.OPEN or conn.kind != "websocket":
        return  # an SSE subscriber cannot answer; its stream has its own heartbeat comments
    if idle is not None and now - conn.last_seen > idle:
        stats.idle_timeouts += 1
        conn.request_close(*IDLE_CLOSE, drain=False)
        return
    if heartbeat is None:
        return
    if conn.ping_sent_at is not None:
        if conn.last_seen < conn.ping_sent_at and now - conn.ping_sent_at > heartbeat.timeout:
            stats.heartbeat_timeouts += 1
            conn.request_close(*TIMEOUT_CLOSE, drain=False)
        elif conn.last_seen >= conn.ping_sent_at:
            conn.ping_sent_at = None
        return
    if now - conn.last_seen >= heartbeat.interval:
        conn.ping_sent_at = now
        conn.deliver(PING, len(PING["text"] or ""))
