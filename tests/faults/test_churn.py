"""Clients that connect, authenticate, join and then vanish with a TCP reset, round after
round, while publications flow: the workers must end with no connection and no task left."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import uuid

import httpx
import pytest
import websockets

from .._poll import await_true
from ._cluster import Member, Publisher, Workers

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]

ROUNDS = 20
CLIENTS_PER_ROUND = 10  # per worker


async def _debug(client: httpx.AsyncClient, port: int) -> dict[str, int]:
    response = await client.get(f"http://127.0.0.1:{port}/debug")
    return dict(response.json())


async def _join_and_reset(port: int, room: str, stage: int = 2) -> None:
    """Connect, authenticate, join; reset right after the handshake (``stage`` 0), after
    sending the auth frame (1) or once joined (2)."""
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws/{room}")
    if stage >= 1:
        await ws.send(json.dumps({"type": "auth", "token": "good"}))
    if stage >= 2:
        for _ in ("auth_ok", "joined"):
            await asyncio.wait_for(ws.recv(), 15)
    sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()  # RST: the client crashed, or its network went away


async def _churn(workers: Workers) -> None:
    room = f"churn-{uuid.uuid4().hex[:8]}"
    witness = Member("witness", workers.ports[1], room)  # sees the room work throughout
    await witness.join()
    publisher = Publisher(workers.ports[0], room)
    publishing = asyncio.ensure_future(publisher.run())
    try:
        for _ in range(ROUNDS):
            await asyncio.gather(*(_join_and_reset(port, room, stage=i % 3)
                                   for port in workers.ports
                                   for i in range(CLIENTS_PER_ROUND)))  # fmt: skip
    finally:
        publisher.stopping = True
        await asyncio.wait_for(publishing, 30)
    assert publisher.ok_count() == len(publisher.outcomes) > 0
    got = witness.numbers()
    assert got == list(range(1, len(publisher.outcomes) + 1))[: len(got)] and got
    assert await witness.leave() is None


def test_churn_leaves_no_connection_and_no_task_behind(workers: Workers) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=15) as client:
            await _churn_once(client)  # the first connections start what lives for good
            baseline = [await _debug(client, port) for port in workers.ports]
            await _churn(workers)
            for port, before in zip(workers.ports, baseline, strict=True):

                async def settled(port: int = port, before: dict[str, int] = before) -> bool:
                    now = await _debug(client, port)
                    return now["connections"] == 0 and now["tasks"] <= before["tasks"]

                await await_true(settled, 20, f"worker {port} back to {before}")
                print(f"\nchurn: worker {port} before {before}, after {await _debug(client, port)}")
        assert "Exception in ASGI application" not in workers.log_text()
        assert "Traceback" not in workers.log_text()

    async def _churn_once(client: httpx.AsyncClient) -> None:
        for port in workers.ports:
            await _join_and_reset(port, "warm-up")

            async def empty(port: int = port) -> bool:
                return (await _debug(client, port))["connections"] == 0

            await await_true(empty, 20, "the warm-up connection to go")

    asyncio.run(scenario())
