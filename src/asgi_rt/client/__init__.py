"""Clients on the ``websockets`` library (the ``client`` extra; asyncio only).

- :class:`ResilientClient`: one connection that reconnects with capped exponential backoff
  and full jitter, re-authenticates, resumes its room from the last ``seq`` and keeps a
  bounded outbox while disconnected.
- :class:`Backoff` / :class:`RetryPolicy` / :class:`Disconnect`: when to reconnect.
- :class:`ClientPool`: a bounded pool of connections to one upstream, for a server that
  talks to a WebSocket service, with a circuit breaker for when the upstream is down.
"""

from ..exceptions import ClientGaveUp, OutboxFull, PoolExhausted, UpstreamUnavailable
from .pool import ClientPool
from .resilient import ResilientClient, since_query
from .retry import Backoff, Disconnect, RetryPolicy

__all__ = [
    "Backoff",
    "ClientGaveUp",
    "ClientPool",
    "Disconnect",
    "OutboxFull",
    "PoolExhausted",
    "ResilientClient",
    "RetryPolicy",
    "UpstreamUnavailable",
    "since_query",
]
