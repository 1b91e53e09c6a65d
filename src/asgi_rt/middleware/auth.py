"""FirstMessageAuthMiddleware: no unauthenticated frame ever reaches the app.

Browsers cannot set headers on a WebSocket, and ``?token=`` ends up in access logs, so the
usual pattern is: accept, then require ``{"type": "auth", "token": "..."}`` as the first
frame within a timeout. This middleware does exactly that (or takes the token from the
handshake when configured), and only then runs the app, which sees an ordinary connect.
"""

from __future__ import annotations

import logging
import traceback
from collections import Counter

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._authsession import AuthSession, Failure
from ._outcomes import Outcomes, ReasonHook
from ._reject import reject
from ._stackcheck import reports_config_errors, warn_if_inside
from ._tokens import Authenticate, Authenticated, AuthInfo, HandshakeTokens
from .handshake import HandshakeMiddleware

__all__ = ["AuthInfo", "Authenticated", "FirstMessageAuthMiddleware"]

logger = logging.getLogger("asgi_rt.auth")
ORDER_PROBLEM = "a foreign Origin is refused only after accept and auth (1008), not with 403"

FailureHook = ReasonHook


class FirstMessageAuthMiddleware:
    """Authenticate every WebSocket before the app runs; HTTP passes through untouched.

    The client's first frame must be ``{"type": "auth", "token": "..."}`` within
    ``timeout`` seconds. ``authenticate(token)`` returns the principal (or
    :class:`Authenticated` with an expiry), or ``None`` to refuse. On success
    ``scope["user"]`` is the principal, ``scope["auth"]`` an :class:`AuthInfo`, the client
    gets ``{"type": "auth_ok"}``, and the app runs, seeing ``websocket.connect``; its own
    ``websocket.accept`` is absorbed (the subprotocol was settled at the handshake).

    Failures close the socket and the app never runs: 1008 ``auth timeout``, ``auth
    malformed`` (binary, not JSON, wrong type, no token) or ``auth failed`` (refused, or
    ``authenticate`` raised: logged, never the token); 1009 for a first frame over
    ``max_auth_size``. With an expiry, the connection is closed 1008 ``token expired`` at
    that time unless the client sent a fresh auth frame first (answered ``auth_ok``).

    Args:
        app: the ASGI app to protect.
        authenticate: ``async (token) -> principal | Authenticated | None``.
        timeout: seconds for the auth frame to arrive, and again for ``authenticate``.
        max_auth_size: largest auth frame in bytes (1009 beyond).
        header: accept ``Authorization: Bearer <token>`` at the handshake.
        cookie: accept the token from the cookie with this name.
        subprotocol_prefix: accept a ``Sec-WebSocket-Protocol`` entry ``<prefix><token>``
            (e.g. ``"bearer."``); that entry is hidden from the app and never echoed.
        query_param: accept ``?<name>=<token>``. Requires ``allow_query_token=True``:
            URLs, query strings included, are written to access logs.
        allow_query_token: the explicit opt-in for ``query_param``.
        stats: a ``Counter`` of failures by reason (one is made if omitted).
        on_failure: ``on_failure(reason, scope)`` per failure; errors are logged.

    A handshake token that fails is refused before accept with HTTP 401. Without one
    (or with none configured) the first-frame exchange runs.
    """

    @reports_config_errors
    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticate: Authenticate,
        timeout: float = 5.0,
        max_auth_size: int = 4096,
        header: bool = False,
        cookie: str | None = None,
        subprotocol_prefix: str | None = None,
        query_param: str | None = None,
        allow_query_token: bool = False,
        stats: Counter[str] | None = None,
        on_failure: FailureHook | None = None,
    ) -> None:
        if not callable(authenticate):
            raise TypeError("authenticate must be an async callable taking the token")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        if max_auth_size < 16:
            raise ValueError(f"max_auth_size must be >= 16, got {max_auth_size!r}")
        if query_param and not allow_query_token:
            raise ValueError(
                "query_param puts tokens in URLs, which access logs record; "
                "pass allow_query_token=True if you accept that"
            )
        self.app = app
        warn_if_inside(self, app, HandshakeMiddleware, ORDER_PROBLEM)
        self.authenticate = authenticate
        self.timeout = timeout
        self.max_auth_size = max_auth_size
        self.tokens = HandshakeTokens(header, cookie, subprotocol_prefix, query_param)
        self.outcomes = Outcomes(stats, on_failure, "on_failure")
        self.stats = self.outcomes.stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        found = self.tokens.find(scope) if self.tokens.enabled else None
        if found is not None:
            await self._handshake_auth(scope, receive, send, *found)
            return
        session = AuthSession(self, scope, receive, send)
        if await session.first_message():
            await session.run_app(self.app)

    async def verify(self, token: str) -> Authenticated | Failure:
        """Run ``authenticate`` under the timeout; never raises."""
        try:
            with anyio.fail_after(self.timeout):
                result = await self.authenticate(token)
        except TimeoutError:
            logger.warning("authenticate took longer than %.1f s; refusing", self.timeout)
            return Failure("failed")
        except Exception as exc:
            _log_without(token, exc)
            return Failure("failed")
        if isinstance(result, Authenticated):
            return result if result.principal else Failure("failed")
        return Authenticated(result) if result else Failure("failed")

    def failed(self, reason: str, scope: Scope) -> None:
        self.outcomes.record(reason, scope)

    async def _handshake_auth(
        self, scope: Scope, receive: Receive, send: Send, method: str, token: str
    ) -> None:
        result = await self.verify(token)
        if isinstance(result, Failure):
            self.failed(result.reason, scope)
            await reject(scope, send, 401, "authentication failed")
            return
        hidden = _hide_bearer(send, self.tokens.subprotocol_prefix)
        session = AuthSession(self, self.tokens.strip(scope), receive, hidden)
        session.authenticated(method, result, token)
        await session.run_app(self.app)


def _log_without(token: str, exc: Exception) -> None:
    """Log ``authenticate``'s traceback with every copy of the token masked out."""
    text = "".join(traceback.format_exception(exc)).replace(token, "***")
    logger.error("authenticate raised %s; refusing the connection\n%s", type(exc).__name__, text)


def _hide_bearer(send: Send, prefix: str | None) -> Send:
    if not prefix:
        return send

    async def send_without_bearer(message: Message) -> None:
        chosen = message.get("subprotocol")
        if message["type"] == "websocket.accept" and chosen and chosen.startswith(prefix):
            message = {**message, "subprotocol": None}
        await send(message)

    return send_without_bearer
