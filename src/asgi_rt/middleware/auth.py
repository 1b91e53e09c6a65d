"""FirstMessageAuthMiddleware: no unauthenticated frame ever reaches the app.

Browsers cannot set headers on a WebSocket, and ``?token=`` ends up in access logs, so the
usual pattern is: accept, then require ``{"type": "auth", "token": "..."}`` as the first
frame within a timeout. This middleware does exactly that (or takes the token from the
handshake when configured), and only then runs the app, which sees an ordinary connect.
"""

from __future__ import annotations

import logging
import operator
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._json import DEFAULT_MAX_DEPTH, check_depth
from ._authsession import AuthSession, Failure
from ._mask import mask
from ._outcomes import Outcomes, ReasonHook
from ._reject import reject
from ._stackcheck import reports_config_errors, warn_if_inside
from ._tokens import Authenticate, Authenticated, AuthInfo, HandshakeTokens
from .handshake import HandshakeMiddleware

__all__ = ["AuthInfo", "Authenticated", "FirstMessageAuthMiddleware"]

logger = logging.getLogger("asgi_rt.auth")
ORDER_PROBLEM = "a foreign Origin is refused only after accept and auth (1008), not with 403"

FailureHook = ReasonHook
SamePrincipal = Callable[[Any, Any], bool]


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
    that time unless the client sent a fresh auth frame first (answered ``auth_ok``). A
    fresh frame must authenticate the same principal (``same_principal``), else 1008
    ``principal changed``: a socket has one identity for its whole life.

    Args:
        app: the ASGI app to protect.
        authenticate: ``async (token) -> principal | Authenticated | None``.
        timeout: seconds for the auth frame to arrive, and again for ``authenticate``.
        max_auth_size: largest auth frame in bytes (1009 beyond).
        max_json_depth: deepest nesting decoded in an auth frame (1..500); deeper, like
            ``NaN`` or a lone surrogate, is ``auth malformed``.
        header: accept ``Authorization: Bearer <token>`` at the handshake.
        cookie: accept the token from the cookie with this name.
        subprotocol_prefix: accept a ``Sec-WebSocket-Protocol`` entry ``<prefix><token>``
            (e.g. ``"bearer."``); that entry is hidden from the app and never echoed.
        query_param: accept ``?<name>=<token>``. Requires ``allow_query_token=True``:
            URLs, query strings included, are written to access logs.
        allow_query_token: the explicit opt-in for ``query_param``.
        stats: a ``Counter`` of failures by reason (one is made if omitted).
        on_failure: ``on_failure(reason, scope)`` per failure; errors are logged.
        same_principal: ``(old, new) -> bool``, whether a refresh frame's principal is
            the one the socket logged in as (default ``old == new``). One that raises is
            logged and counts as ``False``.
        max_pending: sockets allowed in the first-frame exchange at once (accepted,
            not yet authenticated), apart from ``HandshakeMiddleware``'s
            ``max_connections``; beyond it a handshake is refused with 503 before accept
            (reason ``busy``). With ``timeout`` it bounds what unauthenticated peers cost.
        sse_paths: path prefixes of HTTP routes (SSE streams) authenticated from the
            handshake sources above (header, cookie; query only when allowed): a token
            that fails is a 401 before the route runs; a good one sets ``scope["user"]``
            and ``scope["auth"]``; without one the route runs with no ``scope["user"]``
            (``RoomManager(authorize=...)`` then decides). Other HTTP passes untouched.
        keep_credentials: leave the handshake credentials (``Authorization`` header,
            token cookie, query parameter) in the scope the app sees; by default they
            are removed (the app has the token as ``scope["auth"].token``).

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
        max_json_depth: int = DEFAULT_MAX_DEPTH,
        header: bool = False,
        cookie: str | None = None,
        subprotocol_prefix: str | None = None,
        query_param: str | None = None,
        allow_query_token: bool = False,
        stats: Counter[str] | None = None,
        on_failure: FailureHook | None = None,
        same_principal: SamePrincipal = operator.eq,
        max_pending: int | None = None,
        sse_paths: Sequence[str] = (),
        keep_credentials: bool = False,
    ) -> None:
        if not callable(authenticate):
            raise TypeError("authenticate must be an async callable taking the token")
        if not callable(same_principal):
            raise TypeError("same_principal must be a callable (old, new) -> bool")
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
        self.max_json_depth = check_depth(max_json_depth)
        self.tokens = HandshakeTokens(header, cookie, subprotocol_prefix, query_param)
        self.outcomes = Outcomes(stats, on_failure, "on_failure")
        self.stats = self.outcomes.stats
        self.same_principal = same_principal
        if isinstance(sse_paths, str):
            raise TypeError("sse_paths must be a list of path prefixes, not one string")
        self.sse_paths = tuple(sse_paths)
        if self.sse_paths and not self.tokens.enabled:
            raise ValueError("sse_paths needs a handshake token source (header, cookie, ...)")
        self.keep_credentials = keep_credentials
        if max_pending is not None and max_pending < 1:
            raise ValueError(f"max_pending must be >= 1 or None, got {max_pending!r}")
        self.max_pending = max_pending
        self.pending = 0  # shared by every connection through this middleware: its point

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            if scope["type"] == "http" and self._is_sse(scope["path"]):
                await self._http_auth(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        found = self.tokens.find(scope) if self.tokens.enabled else None
        if found is not None:
            await self._handshake_auth(scope, receive, send, *found)
            return
        if self.max_pending is not None and self.pending >= self.max_pending:
            self.failed("busy", scope)
            await reject(scope, send, 503, "too many unauthenticated connections")
            return
        session = AuthSession(self, scope, receive, send)
        self.pending += 1
        try:
            authenticated = await session.first_message()
        finally:
            self.pending -= 1
        if authenticated:
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

    def same(self, old: Any, new: Any) -> bool:
        """``same_principal(old, new)``, failsafe: a hook that raises says no."""
        try:
            return bool(self.same_principal(old, new))
        except Exception:
            logger.exception("same_principal raised; treating the refresh as another principal")
            return False

    def failed(self, reason: str, scope: Scope) -> None:
        """Count a refusal and tell ``on_failure``, which gets the scope without the
        credentials (a hook that logs its scope must not log the token)."""
        self.outcomes.record(reason, self.tokens.strip(scope))

    async def _handshake_auth(
        self, scope: Scope, receive: Receive, send: Send, method: str, token: str
    ) -> None:
        result = await self.verify(token)
        if isinstance(result, Failure):
            self.failed(result.reason, scope)
            await reject(scope, send, 401, "authentication failed")
            return
        hidden = _hide_bearer(send, self.tokens.subprotocol_prefix)
        scope = self.tokens.strip(scope, credentials=not self.keep_credentials)
        session = AuthSession(self, scope, receive, hidden)
        session.authenticated(method, result, token)
        await session.run_app(self.app)

    def _is_sse(self, path: str) -> bool:
        return bool(self.sse_paths) and path.startswith(self.sse_paths)

    async def _http_auth(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An SSE route: authenticate from the handshake sources, or 401."""
        found = self.tokens.find(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        method, token = found
        result = await self.verify(token)
        if isinstance(result, Failure):
            self.failed(result.reason, scope)
            await PlainTextResponse("authentication failed", 401)(scope, receive, send)
            return
        scope = self.tokens.strip(scope, credentials=not self.keep_credentials)
        scope["user"] = result.principal
        scope["auth"] = AuthInfo(method, result.expires_at, token)
        await self.app(scope, receive, send)


def _log_without(token: str, exc: Exception) -> None:
    """Log ``authenticate``'s traceback with the token, and any part of it, masked out."""
    text = mask("".join(traceback.format_exception(exc)), token)
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
