"""ManagerOptions: the keyword options of ConnectionManager as a TypedDict."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from ._encode import Dumps
from .backpressure import Overflow
from .heartbeat import Heartbeat
from .ratelimit import RateLimit

if TYPE_CHECKING:
    from ..metrics import Metrics

__all__ = ["ManagerOptions"]


class ManagerOptions(TypedDict, total=False):
    """The options of :class:`ConnectionManager`, which :class:`RoomManager` passes on."""

    queue_size: int
    queue_bytes: int | None
    overflow: Overflow
    send_timeout: float | None
    max_message_size: int | None
    rate_limit: RateLimit | None
    max_invalid_frames: int
    max_json_depth: int
    close_timeout: float
    inline_send: bool | None
    direct_send: bool
    dumps: Dumps
    metrics: Metrics | None
    heartbeat: Heartbeat | None
    idle_timeout: float | None
    drain_window: float
