"""One log line per refused handshake reason, not one per refused socket.

A page that reconnects with a wrong Origin is refused every few seconds; logging each one
floods the log, logging none leaves an operator with a bare ``403`` from the server. So:
the first refusal for a reason is logged with what was refused (the Origin, the path,
never the query string, which may carry a token), the next ones within ``interval``
seconds are counted, and that count rides on the next line for the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.types import Scope

__all__ = ["RefusalLog"]

logger = logging.getLogger("asgi_rt.handshake")

MAX_SHOWN = 200  # characters of a client-chosen header value put in a log line


class RefusalLog:
    """At most one WARNING per reason per ``interval`` seconds, with the count not logged.

    Args:
        interval: seconds between two lines for one reason (0: log every refusal).
        clock: a monotonic clock (tests pass their own).

    Raises:
        ValueError: ``interval`` is negative.
    """

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not interval >= 0:
            raise ValueError(f"refusal_log_interval must be >= 0, got {interval!r}")
        self.interval, self.clock = interval, clock
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def refused(self, reason: str, status: int, detail: str, scope: Scope) -> None:
        now = self.clock()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval:
            self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
            return
        self._last[reason] = now
        unlogged = self._unlogged.pop(reason, 0)
        more = f"; {unlogged} more refused for {reason} since the last line" if unlogged else ""
        logger.warning(
            "WebSocket handshake refused with %d (%s: %s): Origin %s, path %s%s",
            status, reason, detail, _shown(_header(scope, b"origin")),
            _shown(scope.get("path", "")), more,
        )  # fmt: skip


def _header(scope: Scope, name: bytes) -> str | None:
    values = [v for k, v in scope.get("headers", ()) if k == name]
    return ", ".join(v.decode("latin-1") for v in values) if values else None


def _shown(value: str | None) -> str:
    """A client-chosen value, quoted and cut, so it cannot forge or flood log lines."""
    return "(none)" if value is None else repr(value[:MAX_SHOWN])
