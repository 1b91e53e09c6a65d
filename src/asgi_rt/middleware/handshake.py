"""HandshakeMiddleware: decide about a WebSocket before the app ever runs.

Starlette's CORSMiddleware skips WebSocket scopes, so without this any site a logged-in
user visits can open an authenticated socket to the app (Cross-Site WebSocket
Hijacking). This middleware checks, in order: ``Sec-WebSocket-Version``, ``Origin``
against an allowlist, subprotocol negotiation, then the global and per-client
connection limits. A refused handshake gets a real HTTP status; the app is not invoked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._retry_hint import RetryAfter, check_retry_after, header_value
from ._limits import ConnectionLimiter
from ._origin import OriginPattern, parse_origin, parse_pattern
from ._outcomes import Outcomes, ReasonHook
from ._refusals import RefusalLog
from ._reject import reject
from ._stackcheck import reports_config_errors

__all__ = ["HandshakeMiddleware", "RejectHook"]

RejectHook = ReasonHook

# reason -> (HTTP status, body); the reasons are the bounded label set for metrics
REJECTIONS = {
    "version": (426, "unsupported WebSocket version: expected 13"),
    "origin": (403, "origin not allowed"),
    "subprotocol": (400, "no supported subprotocol offered"),
    "max_connections": (503, "too many connections"),
    "max_connections_per_client": (429, "too many connections from this client"),
    "deflate": (400, "permessage-deflate not accepted here: offer no extensions"),
}


class HandshakeMiddleware:
    """Validate WebSocket handshakes before the app runs; HTTP passes through untouched.

    Args:
        app: the ASGI app to protect.
        allowed_origins: exact origins (``https://app.example.com``; a default port is the
            same as none), ``scheme://*.example.com`` for any subdomain (never the apex), or
            ``"*"`` for any well-formed origin. Required: pass ``["*"]`` to opt out.
        allow_missing_origin: accept handshakes without ``Origin`` (non-browser clients).
        allow_null_origin: accept ``Origin: null`` (sandboxed iframes, file:// pages).
        allow_malformed_origin: with ``"*"``, accept origins that do not parse too.
        subprotocols: the server's subprotocols; the first one the client offered that is
            in this list is put into ``websocket.accept`` when the app does not choose.
        require_subprotocol: refuse (400) a client that offers none of ``subprotocols``.
        max_connections: open WebSockets through this middleware at once (503 beyond).
        max_connections_per_client: per client address (429 beyond).
        client_ip_header: take the client address from this header (``x-forwarded-for``,
            or ``forwarded`` for RFC 7239's ``for=``) instead of the socket; only behind a
            proxy that sets it.
        trusted_hops: with ``client_ip_header``, how many proxies you run: the address
            is the one that many entries from the right of all the header's lines joined
            in order (too few entries: the socket's address).
        refuse_deflate: refuse (400) a handshake that offers ``permessage-deflate``:
            ``True`` on every route, or a list of path prefixes. The server would inflate
            every frame, the unauthenticated first one included, before any size check of
            ours (a 15 KB frame can inflate to ``--ws-max-size``). ASGI gives no way to
            decline just the extension (the server negotiates it from its own copy of the
            request), so for browsers, which always offer it, run uvicorn with
            ``--ws-per-message-deflate false`` instead (README "Security").
        stats: a ``Counter`` to count rejections by reason into (one is made if omitted).
        on_reject: called as ``on_reject(reason, scope)`` per rejection; errors are logged.
        refusal_log_interval: a refusal is logged (logger ``asgi_rt.handshake``, WARNING,
            with the reason, the refused Origin and the path, never the query string) at
            most once per reason per this many seconds; the next line counts the others.
        retry_after: the ``Retry-After`` header of a 503 or 429 (load shedding): seconds,
            or a ``(low, high)`` range drawn uniformly per refusal so that the refused do
            not return together (sent rounded up to whole seconds); ``None`` sends none.

    Raises:
        ValueError: a malformed origin pattern, a limit below 1, a negative interval or
            retry_after.
        TypeError: ``allowed_origins`` is one string, or ``retry_after`` is not seconds.
    """

    @reports_config_errors
    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_origins: Iterable[str],
        allow_missing_origin: bool = False,
        allow_null_origin: bool = False,
        allow_malformed_origin: bool = False,
        subprotocols: Sequence[str] = (),
        require_subprotocol: bool = False,
        max_connections: int | None = None,
        max_connections_per_client: int | None = None,
        client_ip_header: str | None = None,
        trusted_hops: int = 1,
        refuse_deflate: bool | Sequence[str] = False,
        stats: Counter[str] | None = None,
        on_reject: RejectHook | None = None,
        refusal_log_interval: float = 60.0,
        retry_after: RetryAfter | None = (1.0, 5.0),
    ) -> None:
        if isinstance(allowed_origins, str):
            raise TypeError("allowed_origins must be a list of origins, not one string")
        self.app = app
        self.patterns: tuple[OriginPattern, ...] = tuple(map(parse_pattern, allowed_origins))
        self.allow_missing_origin = allow_missing_origin
        self.allow_null_origin = allow_null_origin
        self.allow_malformed_origin = allow_malformed_origin and any(
            p.scheme is None for p in self.patterns
        )
        if require_subprotocol and not subprotocols:
            raise ValueError("require_subprotocol needs a non-empty subprotocols list")
        self.subprotocols = frozenset(subprotocols)
        self.require_subprotocol = require_subprotocol
        self.limiter = ConnectionLimiter(
            max_connections, max_connections_per_client, client_ip_header, trusted_hops
        )
        if isinstance(refuse_deflate, str):
            raise TypeError("refuse_deflate must be a bool or a list of path prefixes")
        self.deflate_paths: tuple[str, ...] = (
            ("",) if refuse_deflate is True else tuple(refuse_deflate or ())
        )
        self.outcomes = Outcomes(stats, on_reject, "on_reject")
        self.stats = self.outcomes.stats
        self.refusals = RefusalLog(refusal_log_interval)
        self.retry_after = check_retry_after(retry_after)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        reason = (self._check_version(headers) or self._check_origin(headers)
                  or self._check_deflate(scope))  # fmt: skip
        chosen = self._negotiate(scope.get("subprotocols") or ())
        if reason is None and chosen is None and self.require_subprotocol:
            reason = "subprotocol"
        slot = None
        if reason is None:
            slot, reason = self.limiter.acquire(scope)
        if reason is not None:
            await self._reject(scope, send, reason)
            return
        try:
            await self.app(scope, receive, send if chosen is None else _fill(send, chosen))
        finally:
            self.limiter.release(slot)

    def _check_version(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        versions = [v for k, v in headers if k == b"sec-websocket-version"]
        return None if versions == [b"13"] else "version"

    def _check_origin(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        origins = [v for k, v in headers if k == b"origin"]
        if not origins:
            return None if self.allow_missing_origin else "origin"
        if len(origins) > 1:
            return "origin"
        value = origins[0].decode("latin-1")
        if value == "null":
            return None if self.allow_null_origin else "origin"
        origin = parse_origin(value)
        if origin is None:
            return None if self.allow_malformed_origin else "origin"
        return None if any(p.matches(origin) for p in self.patterns) else "origin"

    def _check_deflate(self, scope: Scope) -> str | None:
        if not self.deflate_paths or not scope["path"].startswith(self.deflate_paths):
            return None
        offers = b",".join(v for k, v in scope["headers"] if k == b"sec-websocket-extensions")
        return "deflate" if b"permessage-deflate" in offers.lower() else None

    def _negotiate(self, offered: Iterable[str]) -> str | None:
        if not self.subprotocols:
            return None
        return next((p for p in offered if p in self.subprotocols), None)

    async def _reject(self, scope: Scope, send: Send, reason: str) -> None:
        self.outcomes.record(reason, scope)
        status, body = REJECTIONS[reason]
        self.refusals.refused(reason, status, body, scope)
        extra = [(b"sec-websocket-version", b"13")] if reason == "version" else None
        if status in (429, 503) and self.retry_after is not None:
            extra = [(b"retry-after", header_value(self.retry_after))]
        await reject(scope, send, status, body, extra)


def _fill(send: Send, subprotocol: str) -> Send:
    """Wrap ``send`` so an accept without a subprotocol gets the negotiated one."""

    async def send_with_subprotocol(message: Message) -> None:
        if message["type"] == "websocket.accept" and not message.get("subprotocol"):
            message = {**message, "subprotocol": subprotocol}
        await send(message)

    return send_with_subprotocol
