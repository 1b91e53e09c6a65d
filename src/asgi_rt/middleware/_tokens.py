"""Where a token can come from at the handshake, and what authentication returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode

from starlette.types import Scope

__all__ = ["AuthInfo", "Authenticate", "Authenticated", "HandshakeTokens"]


@dataclass(frozen=True, slots=True)
class Authenticated:
    """What ``authenticate`` may return to give the principal an expiry.

    Args:
        principal: the user (or any truthy object) put into ``scope["user"]``.
        expires_at: when the token stops being valid, as a Unix timestamp (like JWT
            ``exp``); the connection is closed 1008 ``token expired`` then, unless the
            client sent a fresh ``{"type": "auth", "token": ...}`` frame before it.
    """

    principal: Any
    expires_at: float | None = None


# authenticate(token) -> principal, Authenticated(...), or None/falsy to refuse
Authenticate = Callable[[str], Awaitable[Any]]


@dataclass(slots=True)
class AuthInfo:
    """``scope["auth"]`` after a successful authentication.

    Attributes:
        method: ``"message"``, ``"header"``, ``"cookie"``, ``"subprotocol"`` or ``"query"``.
        expires_at: Unix timestamp of expiry, or ``None``.
        token: the token itself, for calls the app makes on the user's behalf. It is left
            out of ``repr`` so that logging the scope does not leak it.
    """

    method: str
    expires_at: float | None = None
    token: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class HandshakeTokens:
    """Which handshake sources are read, in this order: header, cookie, subprotocol, query."""

    header: bool
    cookie: str | None
    subprotocol_prefix: str | None
    query_param: str | None

    @property
    def enabled(self) -> bool:
        return bool(self.header or self.cookie or self.subprotocol_prefix or self.query_param)

    def find(self, scope: Scope) -> tuple[str, str] | None:
        """Return ``(method, token)`` from the first configured source that has one."""
        headers, prefix = scope["headers"], self.subprotocol_prefix
        found = (
            ("header", self.header and _bearer(headers)),
            ("cookie", self.cookie and _cookie(headers, self.cookie)),
            ("subprotocol", prefix and _subprotocol(scope, prefix)),
            ("query", self.query_param and _query(scope, self.query_param)),
        )
        return next(((method, token) for method, token in found if token), None)

    def strip(self, scope: Scope, *, credentials: bool = True) -> Scope:
        """A copy of ``scope`` without the bearer subprotocol entries (never echoed back)
        and, with ``credentials``, without the configured sources' tokens: the
        ``Authorization`` header, the token cookie and the query parameter."""
        prefix, scope = self.subprotocol_prefix, dict(scope)
        offered = scope.get("subprotocols") or []
        if prefix and any(p.startswith(prefix) for p in offered):
            scope["subprotocols"] = [p for p in offered if not p.startswith(prefix)]
        if credentials:
            scope["headers"] = self._headers_without(scope["headers"])
            if self.query_param and scope.get("query_string"):
                pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
                kept = [(k, v) for k, v in pairs if k != self.query_param]
                scope["query_string"] = urlencode(kept).encode("latin-1")
        return scope

    def _headers_without(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        kept = []
        for key, value in headers:
            if key == b"authorization" and self.header:
                continue
            if key == b"cookie" and self.cookie:
                value = _cookie_without(value, self.cookie)
                if not value:
                    continue
            kept.append((key, value))
        return kept


def _cookie_without(value: bytes, name: str) -> bytes:
    """A ``Cookie`` header value without the cookie ``name``."""
    pairs = [p.strip() for p in value.split(b";")]
    prefix = name.encode("latin-1") + b"="
    return b"; ".join(p for p in pairs if p and not p.startswith(prefix))


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for key, value in headers:
        if key == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _subprotocol(scope: Scope, prefix: str) -> str | None:
    for offered in scope.get("subprotocols") or ():
        if offered.startswith(prefix) and len(offered) > len(prefix):
            return str(offered[len(prefix) :])
    return None


def _query(scope: Scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values and values[0] else None


def _cookie(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    for key, value in headers:
        if key == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except CookieError:
                continue
            if name in jar and jar[name].value:
                return jar[name].value
    return None
