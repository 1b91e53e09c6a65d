"""Clients on the ``websockets`` library (the ``client`` extra).

:class:`ClientPool`: a bounded pool of connections to one upstream, for a server that
talks to a WebSocket service.
"""

from .pool import ClientPool

__all__ = ["ClientPool"]
