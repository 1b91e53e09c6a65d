"""Lifecycle helpers of ConnectionManager: spread closes, refusal, event-loop checks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import anyio
from starlette.websockets import WebSocket, WebSocketState

from .._retry_hint import drain_reason
from ._transport import Transport
from .connection import Connection

__all__ = ["close_spread", "on_asyncio", "refuse"]


async def close_spread(
    conns: Sequence[Connection], code: int, reason: str, *, timeout: float, window: float,
    retry_hint: bool, close_timeout: float,
) -> None:  # fmt: skip
    """Close ``conns`` in batches over ``window`` seconds (see ``close_all``)."""
    batches = max(1, min(len(conns), round(window / 0.05))) if window > 0 else 1
    for index in range(batches):
        if index:
            await anyio.sleep(window / batches)
        offset = window * index / batches
        for conn in conns[index::batches]:
            said = drain_reason(reason, window, offset) if window and retry_hint else reason
            conn.request_close(code, said, drain=True)
    with anyio.move_on_after(timeout):
        for conn in conns:
            await conn.wait_closed()
    for conn in conns:
        conn.request_close(code, reason, drain=False)
    with anyio.move_on_after(close_timeout * 2):
        for conn in conns:
            await conn.wait_closed()


async def refuse(websocket: Transport) -> None:
    """Close a WebSocket whose manager was never started: 403 before accept, else 1011 with
    a reason (rather than the silence of a socket nobody serves)."""
    if (
        isinstance(websocket, WebSocket)
        and websocket.client_state is not WebSocketState.DISCONNECTED
    ):
        with anyio.CancelScope(shield=True):
            await websocket.send({"type": "websocket.close", "code": 1011,
                                  "reason": "server not started"})  # fmt: skip


def on_asyncio() -> bool:
    """Whether this runs on an asyncio loop (inline sends and cheap interrupts need it)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
