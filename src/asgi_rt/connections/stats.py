"""Counters a manager keeps for its connections (plain ints: cheap to bump)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ManagerStats"]


@dataclass(slots=True)
class ManagerStats:
    """A snapshot of one manager's counters, from :meth:`ConnectionManager.stats`.

    Attributes:
        active: connections registered now.
        opened: connections ever registered.
        closed: connections ever unregistered.
        sent: messages handed to the transport (inline or by a writer).
        queued: messages that had to wait behind a pending send.
        dropped_oldest: messages evicted by ``DROP_OLDEST`` (or ``COALESCE`` falling back to it).
        dropped_newest: messages refused by ``DROP_NEWEST`` (or too big for the byte bound).
        coalesced: queued messages replaced by a newer one with the same key.
        dropped_closed: messages sent to a connection that was already closing.
        discarded_on_close: messages still queued when their connection closed.
        slow_consumer_disconnects: connections closed 1013 because their queue overflowed.
        send_timeouts: connections closed 1013 because one send outlasted ``send_timeout``.
        send_errors: sends that failed because the peer was gone.
        oversize_closes: connections closed 1009 for a frame over ``max_message_size``.
        rate_limit_closes: connections closed 1008 for exceeding their rate limit.
        invalid_frames: frames answered with an error frame (bad JSON, wrong kind).
        invalid_data_closes: connections closed 1003/1007 for bad data.
        idle_timeouts: connections closed 4000 for sending nothing for ``idle_timeout``.
        heartbeat_timeouts: connections closed 4001 for not answering a heartbeat ping.
    """

    active: int = 0
    opened: int = 0
    closed: int = 0
    sent: int = 0
    queued: int = 0
    dropped_oldest: int = 0
    dropped_newest: int = 0
    coalesced: int = 0
    dropped_closed: int = 0
    discarded_on_close: int = 0
    slow_consumer_disconnects: int = 0
    send_timeouts: int = 0
    send_errors: int = 0
    oversize_closes: int = 0
    rate_limit_closes: int = 0
    invalid_frames: int = 0
    invalid_data_closes: int = 0
    idle_timeouts: int = 0
    heartbeat_timeouts: int = 0
