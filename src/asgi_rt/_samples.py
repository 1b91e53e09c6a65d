"""What :class:`~asgi_rt.metrics.Metrics` reads from managers at scrape time (or exports
every second in multiprocess mode): one function per family, summed over managers."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .backends.base import Backend, ListenerHealth

if TYPE_CHECKING:
    from .connections.manager import ConnectionManager
    from .rooms import RoomManager

__all__ = [
    "Read", "Samples", "depth", "drops", "heartbeat_closes", "listener_up", "reconnects",
    "rooms", "slow",
]  # fmt: skip

Samples = list[tuple[tuple[str, ...], float]]
Read = Callable[[list["ConnectionManager"]], Samples]


def heartbeat_closes(managers: list[ConnectionManager]) -> Samples:
    stats = [m.stats() for m in managers]
    return [
        (("idle_timeout",), float(sum(s.idle_timeouts for s in stats))),
        (("heartbeat_timeout",), float(sum(s.heartbeat_timeouts for s in stats))),
    ]


def _room_managers(managers: list[ConnectionManager]) -> list[RoomManager]:
    from .rooms import RoomManager  # imported here: it imports this module's users

    return [m for m in managers if isinstance(m, RoomManager)]


def _backends(managers: list[ConnectionManager]) -> list[Backend]:
    return [m.backend for m in _room_managers(managers)]


def rooms(managers: list[ConnectionManager]) -> Samples:
    rooms = _room_managers(managers)
    return [((), float(sum(len(m.rooms()) for m in rooms)))] if rooms else []


def listener_up(managers: list[ConnectionManager]) -> Samples:
    backends = _backends(managers)
    if not backends:
        return []
    up = (b.listener_up if isinstance(b, ListenerHealth) else True for b in backends)
    return [((), float(min(int(u) for u in up)))]


def reconnects(managers: list[ConnectionManager]) -> Samples:
    backends = _backends(managers)
    counts = (b.reconnects if isinstance(b, ListenerHealth) else 0 for b in backends)
    return [((), float(sum(counts)))] if backends else []


def depth(managers: list[ConnectionManager]) -> Samples:
    return [((), float(sum(c.queued for m in managers for c in m)))]


def drops(managers: list[ConnectionManager]) -> Samples:
    totals = dict.fromkeys(("drop_oldest", "drop_newest", "coalesced", "closed"), 0.0)
    for manager in managers:
        s = manager.stats()
        totals["drop_oldest"] += s.dropped_oldest
        totals["drop_newest"] += s.dropped_newest
        totals["coalesced"] += s.coalesced
        totals["closed"] += s.dropped_closed + s.discarded_on_close
    return [((reason,), value) for reason, value in totals.items()]


def slow(managers: list[ConnectionManager]) -> Samples:
    stats = [m.stats() for m in managers]
    return [((), float(sum(s.slow_consumer_disconnects + s.send_timeouts for s in stats)))]
