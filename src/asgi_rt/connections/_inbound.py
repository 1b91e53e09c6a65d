"""The inbound side of Connection: frame iterators, size, error frames, violation counts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from .._json import loads
from ..exceptions import InvalidData, MessageTooBig, ProtocolViolation, RateLimitExceeded
from .stats import ManagerStats

__all__ = [
    "END", "End", "Frames", "count_violation", "error_frame", "frame_size", "next_frame",
    "next_json", "next_text",
]  # fmt: skip

T = TypeVar("T")

Receive = Callable[[], Awaitable[str | bytes | None]]


class End:
    """Ends iteration: JSON can decode to ``None``, so ``None`` cannot."""


END = End()


class Frames(Generic[T]):
    """An async iterator over a receive function (not an async generator, so that
    breaking out of ``async for`` leaves nothing to finalise)."""

    __slots__ = ("_next",)

    def __init__(self, next_: Callable[[], Awaitable[T | End]]) -> None:
        self._next = next_

    def __aiter__(self) -> Frames[T]:
        return self

    async def __anext__(self) -> T:
        value = await self._next()
        if isinstance(value, End):
            raise StopAsyncIteration
        return value


async def next_frame(receive: Receive) -> str | bytes | End:
    data = await receive()
    return END if data is None else data


async def next_text(
    receive: Receive, violate: Callable[[ProtocolViolation], Awaitable[None]]
) -> str | End:
    """The next text frame; a binary one closes 1003 through ``violate``."""
    data = await receive()
    if isinstance(data, bytes):
        await violate(
            InvalidData("expected a text frame, got binary", code=1003, reason="expected text")
        )
        return END
    return END if data is None else data


async def next_json(
    receive: Receive, reject: Callable[[str, str], Awaitable[bool]], max_depth: int
) -> Any:
    """The next frame that decodes as JSON; each bad one is answered through ``reject``."""
    while (data := await receive()) is not None:
        try:
            return loads(data, max_depth=max_depth)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError and BadJSON
            if not await reject("invalid_json", f"expected JSON: {exc}"):
                break
    return END


def error_frame(code: str, message: str, id: Any) -> dict[str, Any]:
    """``{"type": "error", "data": {"code", "message"}, "id"}``, always encodable."""
    text = message[:200]
    if not text.isascii():  # an error frame must always encode: no lone surrogate in it
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    frame: dict[str, Any] = {"type": "error", "data": {"code": code, "message": text}}
    if id is not None:
        frame["id"] = id
    return frame


def count_violation(stats: ManagerStats, exc: ProtocolViolation) -> None:
    """Count the close ``exc`` is about to cause in the manager's stats."""
    if isinstance(exc, MessageTooBig):
        stats.oversize_closes += 1
    elif isinstance(exc, RateLimitExceeded):
        stats.rate_limit_closes += 1
    else:
        stats.invalid_data_closes += 1


def frame_size(data: str | bytes) -> int:
    """The payload size in bytes (UTF-8 for text)."""
    return len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode("utf-8"))
