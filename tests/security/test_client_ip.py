"""Attack: forge the client address to lock out another client or escape one's own limit."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from starlette.types import Receive, Scope, Send

from asgi_rt import HandshakeMiddleware

from .._rawclient import RawClient
from .._server import RunningServer

pytestmark = pytest.mark.server

VICTIM = "203.0.113.7"
ATTACKER = "198.51.100.50"  # the address the attacker really connects from


async def _hold(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept and keep the socket until the client goes."""
    await receive()
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


def _guarded(header: str) -> HandshakeMiddleware:
    return HandshakeMiddleware(_hold, allowed_origins=["*"], allow_missing_origin=True,
                               max_connections_per_client=2, client_ip_header=header)  # fmt: skip


def test_a_forged_first_line_is_not_the_client_behind_a_proxy_that_adds_a_line(
    serve: Callable[..., RunningServer], raw: Callable[..., RawClient]
) -> None:
    server = serve(_guarded("x-forwarded-for"))
    # HAProxy `option forwardfor` adds its own line after whatever the client sent
    forged = [[("X-Forwarded-For", f"{VICTIM}, 192.0.2.{n}"), ("X-Forwarded-For", ATTACKER)]
              for n in range(3)]  # fmt: skip
    attacker = [raw(server.port, headers=headers) for headers in forged]
    victim = raw(server.port, headers=[("X-Forwarded-For", VICTIM)])
    assert [c.status for c in attacker] == [101, 101, 429]  # its own limit, whatever it forges
    assert victim.status == 101  # and the victim is not locked out


def test_rfc7239_forwarded_for_is_understood(
    serve: Callable[..., RunningServer], raw: Callable[..., RawClient]
) -> None:
    server = serve(_guarded("forwarded"))
    forged = [[("Forwarded", f'for="{VICTIM}", for=192.0.2.{n}'),
               ("Forwarded", f"for={ATTACKER}:4711;proto=https")] for n in range(3)]  # fmt: skip
    attacker = [raw(server.port, headers=headers) for headers in forged]
    victim = raw(server.port, headers=[("Forwarded", 'for="[2001:db8::7]:443"')])
    assert [c.status for c in attacker] == [101, 101, 429]
    assert victim.status == 101
