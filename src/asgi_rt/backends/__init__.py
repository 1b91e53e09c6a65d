"""Backplanes for RoomManager: chosen by instance or by URL (``memory://``, ``redis://``,
``redis-cluster://``, ``nats://``)."""

from __future__ import annotations

from .base import (
    Backend,
    BackendUnavailable,
    HistoryGap,
    PositionStore,
    PresenceStore,
    Publication,
    PublishNotApplied,
    PublishOutcomeUnknown,
    Resync,
)
from .envelope import RoomMessage
from .memory import MemoryBackend

__all__ = [
    "Backend",
    "BackendUnavailable",
    "HistoryGap",
    "MemoryBackend",
    "PositionStore",
    "PresenceStore",
    "Publication",
    "PublishNotApplied",
    "PublishOutcomeUnknown",
    "Resync",
    "RoomMessage",
    "make_backend",
]


def make_backend(spec: Backend | str, *, history_size: int = 1000) -> Backend:
    """An instance passes through; a URL picks the implementation (imported lazily).

    Raises:
        ValueError: an unknown URL scheme.
        TypeError: neither a URL nor a Backend.
    """
    if isinstance(spec, str):
        scheme = spec.partition("://")[0]
        if scheme == "memory":
            return MemoryBackend(history_size=history_size)
        if scheme in {"redis", "rediss", "unix"}:
            from .redis import RedisBackend  # optional dependency: the 'redis' extra

            return RedisBackend.from_url(spec, history_size=history_size)
        if scheme == "redis-cluster":
            from .redis_cluster import RedisClusterBackend  # the 'redis' extra too

            return RedisClusterBackend.from_url(spec, history_size=history_size)
        if scheme == "nats":
            from .nats import NatsBackend  # optional dependency: the 'nats' extra

            return NatsBackend.from_url(spec, history_size=history_size)
        raise ValueError(f"unknown backend URL {spec!r}: expected memory://, redis://, "
                         "redis-cluster:// or nats://")  # fmt: skip
    if not isinstance(spec, Backend):
        raise TypeError(f"expected a Backend or a URL, got {type(spec).__name__}")
    return spec
