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
        self._connect_pending = False
        self._absorb_accept = False
        self._deadline: float | None = None
        self._ended = False
        self._receive_scope: anyio.CancelScope | None = None

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
        self.scope["user"] = result.principal
        self.scope["auth"] = AuthInfo(method, result.expires_at, token)
        if result.expires_at is not None:
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
        if isinstance(token, Failure):
            return token
        result = await self.mw.verify(token)
        if isinstance(result, Failure):
            return result
        self.authenticated("message", result, token)
        await self._send({"type": "websocket.send", "text": '{"type":"auth_ok"}'})
        return None

    async def _refresh(self, message: Message) -> bool:
        """Consume a fresh auth frame (``True``), or leave the message to the app."""
        text = message.get("text")
        if message["type"] != "websocket.receive" or not text or '"auth"' not in text:
            return False
        try:
            value: Any = loads(text, max_depth=self.mw.max_json_depth)
        except ValueError:  # not JSON within our limits: the app's frame, as it is
            return False
        if not isinstance(value, dict) or value.get("type") != "auth":
            return False
        if isinstance(await self._check(message), Failure):
            await self._fail("failed")
        return True

    async def _watch_expiry(self) -> None:
        while (deadline := self._deadline) is not None:
            await anyio.sleep_until(deadline)
            if self._deadline == deadline:
                break
        await self._fail("expired")
        if self._receive_scope is not None:
            self._receive_scope.cancel()

    async def _fail(self, reason: str) -> bool:
        self._ended = True
        self.mw.failed(reason, self.scope)
        code, text = REASONS[reason]
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": text})
        except Exception:  # the client is already gone
            logger.debug("could not send close %d to a departed client", code)
        return False


def auth_frame(
    text: str | None, data: bytes | None, max_size: int, max_depth: int
) -> str | Failure:
    """Validate an auth frame; return its token or the failure (JSON nested deeper than
    ``max_depth``, ``NaN`` or a lone surrogate is malformed, as any bad JSON is)."""
    if text is None:
        return Failure("too_big" if data and len(data) > max_size else "malformed")
    if len(text) > max_size or len(text.encode()) > max_size:
        return Failure("too_big")
    try:
        value: Any = loads(text, max_depth=max_depth)
    except ValueError:
        return Failure("malformed")
    if not isinstance(value, dict) or value.get("type") != "auth":
        return Failure("malformed")
    token = value.get("token")
    return token if isinstance(token, str) and token else Failure("malformed")
