"""``ConnectionSettings``: the one settings object of a manager, shared by its connections."""

from __future__ import annotations

from dataclasses import dataclass

from .._families import HistogramChild
from .._json import DEFAULT_MAX_DEPTH, check_depth
from ._encode import Dumps
from .backpressure import Overflow
from .ratelimit import RateLimit

__all__ = ["ConnectionSettings"]


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    queue_size: int
    queue_bytes: int | None
    overflow: Overflow
    send_timeout: float | None
    close_timeout: float
    max_message_size: int | None
    rate_limit: RateLimit | None
    max_invalid_frames: int
    dumps: Dumps
    queue_wait: HistogramChild | None = None  # bound once, when metrics are on
    heartbeat: bool = False  # whether {"type":"pong"} frames are swallowed
    track_activity: bool = False  # whether each frame's arrival time is kept (heartbeat, idle)
    max_pending_requests: int = 16  # conn.request() calls waiting for an ack at once
    max_json_depth: int = DEFAULT_MAX_DEPTH  # iter_json: deeper frames get an error frame

    def __post_init__(self) -> None:
        _at_least("queue_size", self.queue_size, 1)
        if self.queue_bytes is not None:
            _at_least("queue_bytes", self.queue_bytes, 1)
        if not isinstance(self.overflow, Overflow):
            raise TypeError(f"overflow must be an Overflow member, got {self.overflow!r}")
        if self.send_timeout is not None and not self.send_timeout > 0:
            raise ValueError(f"send_timeout must be > 0 or None, got {self.send_timeout!r}")
        if not self.close_timeout > 0:
            raise ValueError(f"close_timeout must be > 0, got {self.close_timeout!r}")
        if self.max_message_size is not None:
            _at_least("max_message_size", self.max_message_size, 1)
        if self.rate_limit is not None and not isinstance(self.rate_limit, RateLimit):
            raise TypeError(f"rate_limit must be a RateLimit or None, got {self.rate_limit!r}")
        _at_least("max_invalid_frames", self.max_invalid_frames, 1)
        check_depth(self.max_json_depth)


def _at_least(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
