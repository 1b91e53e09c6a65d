"""One connection's authentication: the first-frame exchange, then expiry and refresh.

Per-connection state lives here, never on the middleware.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._json import loads
from .._sendseam import install
from ._tokens import Authenticated, AuthInfo

if TYPE_CHECKING:
    from .auth import FirstMessageAuthMiddleware

__all__ = ["REASONS", "AuthSession", "Failure"]

logger = logging.getLogger("asgi_rt.auth")

# failure reason -> close code and reason sent to the client (bounded label set)
REASONS = {
    "timeout": (1008, "auth timeout"),
    "malformed": (1008, "auth malformed"),
    "failed": (1008, "auth failed"),
    "too_big": (1009, "auth frame too big"),
    "expired": (1008, "token expired"),
    "principal_changed": (1008, "principal changed"),
}
_DISCONNECT: Message = {"type": "websocket.disconnect", "code": 1008}


@dataclass(frozen=True, slots=True)
class Failure:
    reason: str


class AuthSession:
    """Wraps one connection's receive/send around the auth exchange and the app."""

    def __init__(
        self, mw: FirstMessageAuthMiddleware, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.mw, self.scope = mw, scope
        self._receive, self._send = receive, send
        self._seam = install(scope, send)  # revoked before we close: no direct frame after
        self._connect_pending = False
        self._absorb_accept = False
        self._deadline: float | None = None
        self._ended = False
        self._receive_scope: anyio.CancelScope | None = None
        self._logged_in = False

    async def first_message(self) -> bool:
        """Accept and run the first-frame exchange; ``True`` when the app may run."""
        if (await self._receive())["type"] != "websocket.connect":
            return False
        await self._send({"type": "websocket.accept"})  # HandshakeMiddleware fills subprotocol
        message = None
        with anyio.move_on_after(self.mw.timeout):
            message = await self._receive()
        if message is None:
            return await self._fail("timeout")
        if message["type"] == "websocket.disconnect":
            self.mw.failed("disconnect", self.scope)
            return False
        outcome = await self._check(message)
        if isinstance(outcome, Failure):
            return await self._fail(outcome.reason)
        self._connect_pending = self._absorb_accept = True
        return True

    def authenticated(self, method: str, result: Authenticated, token: str) -> None:
        if not self._logged_in:  # a refresh keeps the principal (checked by _login)
            self._logged_in = True
            self.scope["user"] = result.principal
        self.scope["auth"] = AuthInfo(method, result.expires_at, token)
        if result.expires_at is None:
            self._deadline = None  # a refresh to a token that does not expire: no deadline
        else:
            self._deadline = anyio.current_time() + (result.expires_at - time.time())

    async def run_app(self, app: ASGIApp) -> None:
        if self._deadline is None:
            await app(self.scope, self.receive, self.send)
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_expiry)
            await app(self.scope, self.receive, self.send)
            tg.cancel_scope.cancel()

    async def receive(self) -> Message:
        if self._connect_pending:
            self._connect_pending = False
            return {"type": "websocket.connect"}
        if self._deadline is None:
            return await self._receive()
        while not self._ended:
            with anyio.CancelScope() as scope:
                self._receive_scope = scope
                message = await self._receive()
            self._receive_scope = None
            if scope.cancelled_caught:
                break
            if not await self._refresh(message):
                return message
        return _DISCONNECT

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept" and self._absorb_accept:
            self._absorb_accept = False
        elif kind == "websocket.http.response.start" and self._absorb_accept:
            self._absorb_accept = False  # the app denied after we accepted: close instead
            await self._send({"type": "websocket.close", "code": 1008, "reason": "denied"})
        elif kind == "websocket.http.response.body" or self._ended:
            return
        else:
            await self._send(message)

    async def _check(self, message: Message) -> Failure | None:
        mw = self.mw
        token = auth_frame(message.get("text"), message.get("bytes"), mw.max_auth_size,
                           mw.max_json_depth)  # fmt: skip
        return await self._login(token)

    async def _login(self, token: str | Failure) -> Failure | None:
        """Verify ``token``; on a refresh, the principal must be the one already here."""
        if isinstance(token, Failure):
            return token
        result = await self.mw.verify(token)
        if isinstance(result, Failure):
            return result
        if self._logged_in and not self.mw.same(self.scope["user"], result.principal):
            return Failure("principal_changed")
        self.authenticated("message", result, token)
        await self._send({"type": "websocket.send", "text": '{"type":"auth_ok"}'})
        return None

    async def _refresh(self, message: Message) -> bool:
        """Consume a fresh auth frame (``True``), or leave the message to the app.

        The frame is recognised by its decoded ``type`` (so ``"\\u0061uth"`` is an auth
        frame here as it is as a first frame); text that is not JSON is the app's.
        """
        text = message.get("text")
        if message["type"] != "websocket.receive" or not text or not _may_be_auth(text):
            return False
        value = decode_frame(text, self.mw.max_json_depth)
        if not isinstance(value, dict) or value.get("type") != "auth":
            return False
        token = Failure("too_big") if _too_big(text, self.mw.max_auth_size) else auth_token(value)
        failure = await self._login(token)
        if failure is not None:
            await self._fail(failure.reason)
        return True

    async def _watch_expiry(self) -> None:
        while (deadline := self._deadline) is not None:
            await anyio.sleep_until(deadline)
            if self._deadline == deadline:
                break
        if self._deadline is None:
            return  # refreshed to a token without expiry
        await self._fail("expired")
        if self._receive_scope is not None:
            self._receive_scope.cancel()

    async def _fail(self, reason: str) -> bool:
        self._ended = True
        code, text = REASONS[reason]
        self._seam.revoke(code, text)  # before our close: no direct frame may follow it
        self.mw.failed(reason, self.scope)
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": text})
        except Exception:  # the client is already gone
            logger.debug("could not send close %d to a departed client", code)
        return False


_NOT_JSON = object()


def decode_frame(text: str, max_depth: int) -> Any:
    """The one place an auth frame's JSON is decoded (first frame and refresh alike), with
    the bounded decoder: nested deeper than ``max_depth``, ``NaN`` or a lone surrogate is
    not JSON, as any bad JSON is."""
    try:
        return loads(text, max_depth=max_depth)
    except ValueError:
        return _NOT_JSON


def _may_be_auth(text: str) -> bool:
    """Cheap filter: a JSON string decoding to ``auth`` has it literally or uses an escape."""
    return "auth" in text or "\\" in text


def _too_big(text: str, max_size: int) -> bool:
    return len(text) > max_size or len(text.encode()) > max_size


def auth_frame(
    text: str | None, data: bytes | None, max_size: int, max_depth: int
) -> str | Failure:
    """Validate an auth frame; return its token or the failure."""
    if text is None:
        return Failure("too_big" if data and len(data) > max_size else "malformed")
    if _too_big(text, max_size):
        return Failure("too_big")
    return auth_token(decode_frame(text, max_depth))


def auth_token(value: Any) -> str | Failure:
    """The token of a decoded auth frame, or ``malformed``."""
    if not isinstance(value, dict) or value.get("type") != "auth":
        return Failure("malformed")
    token = value.get("token")
    return token if isinstance(token, str) and token else Failure("malformed")
