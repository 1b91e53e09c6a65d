"""A message envelope, event routing and acks: what every app writes by hand otherwise.

Frames are JSON objects ``{"type": str, "data": any, "id": str, "ts": number}`` (``id``
and ``ts`` optional; room frames add ``seq``). :class:`Router` decodes and validates each
frame, calls the handler registered for its ``type``, and answers a frame that carried an
``id`` with ``{"type": "ack", "id": ..., "data": <the handler's return value>}``. Whatever
goes wrong is answered to that client only, as
``{"type": "error", "data": {"code": ..., "message": ...}, "id": <its id, if any>}``, and
the connection goes on (after ``max_invalid_frames`` bad frames it is closed 1007).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ._json import DEFAULT_MAX_DEPTH, check_depth, loads
from .connections.connection import Connection
from .exceptions import InvalidData

__all__ = ["Envelope", "EnvelopeError", "Handler", "Router", "decode_envelope", "envelope"]

logger = logging.getLogger("asgi_rt.messages")

Handler = Callable[[Connection, Any], Awaitable[Any]]
H = TypeVar("H", bound=Handler)


@dataclass(frozen=True, slots=True)
class Envelope:
    type: str
    data: Any = None
    id: str | int | None = None
    ts: float | None = None


class EnvelopeError(InvalidData):
    """A frame that is not a valid envelope; ``error_code`` names the problem for the client."""

    def __init__(self, error_code: str, message: str, id: Any = None) -> None:
        super().__init__(message)
        self.error_code, self.id = error_code, id


def envelope(type: str, data: Any = None, *, id: str | int | None = None, seq: int | None = None,
             ts: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Build an outgoing envelope (a dict: encoded once when broadcast)."""
    message: dict[str, Any] = {"type": type, "data": data, "ts": time.time() if ts is None else ts}
    if id is not None:
        message["id"] = id
    if seq is not None:
        message["seq"] = seq
    return message


def decode_envelope(raw: str | bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Envelope:
    """Parse and validate one frame.

    ``invalid_json`` covers text that is not JSON, nesting deeper than ``max_depth``,
    ``NaN``/``Infinity``, numbers that overflow to infinity and lone surrogates
    (``"\\ud800"``): whatever decodes can be sent back.

    Raises:
        EnvelopeError: with ``error_code`` ``invalid_json``, ``not_an_object``,
            ``missing_type`` or ``bad_field``.
    """
    try:
        value = loads(raw, max_depth=max_depth)
    except ValueError as exc:
        raise EnvelopeError("invalid_json", f"expected a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise EnvelopeError("not_an_object", f"expected a JSON object, got {type(value).__name__}")
    id_ = value.get("id")
    if id_ is not None and (isinstance(id_, bool) or not isinstance(id_, str | int)):
        raise EnvelopeError("bad_field", "'id' must be a string or an integer")
    kind = value.get("type")
    if not isinstance(kind, str) or not kind:
        raise EnvelopeError("missing_type", "expected a non-empty string 'type'", id_)
    ts = value.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int | float)):
        raise EnvelopeError("bad_field", "'ts' must be a number", id_)
    return Envelope(kind, value.get("data"), id_, ts)


class Router:
    """Dispatch envelopes to handlers by ``type``.

    Example::

        router = Router()

        @router.on("chat.send", model=ChatMessage)      # any pydantic model, dataclass or callable
        async def send(conn: Connection, data: ChatMessage) -> dict:
            await rooms.publish(data.room, data.text)
            return {"ok": True}                        # becomes the ack's data

        async with manager.connect(websocket) as conn:
            await router.serve(conn)                   # until the connection ends
    """

    def __init__(
        self, *, max_size: int | None = None, max_json_depth: int = DEFAULT_MAX_DEPTH
    ) -> None:
        """Args:
        max_size: frames larger than this many bytes (characters, for text) are answered
            with a ``too_big`` error frame instead of being decoded.
        max_json_depth: frames nested deeper (1..500) are answered ``invalid_json``.
        """
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be >= 1 or None, got {max_size}")
        self.max_size = max_size
        self.max_json_depth = check_depth(max_json_depth)
        self._handlers: dict[str, tuple[Handler, Any]] = {}

    def on(self, type: str, *, model: Any = None) -> Callable[[H], H]:
        """Register the decorated ``async (conn, data)`` handler for ``type``.

        ``model`` validates ``data`` first: a pydantic model (``model_validate``), or any
        callable taking the data (a dataclass gets it as keyword arguments when it is a dict).
        """
        if not type:
            raise ValueError("a handler needs a non-empty type")
        if type in self._handlers:
            raise ValueError(f"a handler for {type!r} is already registered")

        def register(handler: H) -> H:
            self._handlers[type] = (handler, model)
            return handler

        return register

    async def serve(self, conn: Connection) -> None:
        """Handle every frame of ``conn`` until it ends; never raises for a bad frame."""
        receive = conn.receive  # not `async for`: two coroutine frames fewer per frame
        while (raw := await receive()) is not None:
            if not await self.handle(conn, raw):
                return

    async def handle(self, conn: Connection, raw: str | bytes) -> bool:
        """Handle one frame; ``False`` once the connection was closed for bad frames."""
        if self.max_size is not None and len(raw) > self.max_size:
            return await conn.reject_frame("too_big", f"frames are limited to {self.max_size}")
        try:
            message = decode_envelope(raw, max_depth=self.max_json_depth)
        except EnvelopeError as exc:
            return await conn.reject_frame(exc.error_code, str(exc), exc.id)
        if message.type == "ack":
            conn.resolve_ack(message.id, message.data)
            return True
        entry = self._handlers.get(message.type)
        if entry is None:
            return await conn.reject_frame("unknown_type", f"no handler for {message.type!r}",
                                           message.id)  # fmt: skip
        handler, model = entry
        try:
            data = message.data if model is None else _validate(model, message.data)
        except Exception as exc:  # the model's own validation error, whatever its type
            return await conn.reject_frame("invalid_data", _first_line(exc), message.id)
        try:
            result = await handler(conn, data)
        except Exception:
            logger.exception("handler for %r raised", message.type)
            text = f"the {message.type!r} handler failed"
            return await conn.reject_frame("handler_error", text, message.id, invalid=False)
        if message.id is not None and conn.state == "open":
            try:
                await conn.send({"type": "ack", "id": message.id, "data": result})
            except (TypeError, ValueError) as exc:  # the result cannot be JSON: a handler bug
                logger.error("the %r handler's result cannot be sent: %s", message.type, exc)
                text = f"the {message.type!r} handler's result cannot be sent as JSON"
                return await conn.reject_frame("handler_error", text, message.id, invalid=False)
        return True


def _validate(model: Any, data: Any) -> Any:
    if model is None:
        return data
    validate = getattr(model, "model_validate", None)
    if callable(validate):
        return validate(data)
    if isinstance(data, dict) and hasattr(model, "__dataclass_fields__"):
        return model(**data)
    return model(data)


def _first_line(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
