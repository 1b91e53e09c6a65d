"""The send seam: where a manager may write data frames below asgi_rt's middleware.

Every data frame to every receiver otherwise crosses each middleware's ``send`` wrapper,
which is most of what a production stack costs on fan-out (``bench/RESULTS.md``). With
``ConnectionManager(direct_send=True)`` the manager writes data frames with the ``send``
the *outermost* asgi_rt middleware was given, and tells the seam of each frame, so:

- the outermost asgi_rt middleware of a WebSocket scope installs the seam
  (:func:`install`), holding the ``send`` it received; inner ones find it;
- :class:`~asgi_rt.TelemetryMiddleware` subscribes with :meth:`SendSeam.report_to` and
  counts those frames exactly (count, sizes, per-connection totals): a frame whose send
  completed at once goes into the connection's :class:`~asgi_rt._directframes.DirectTally`
  (its route's totals are read at scrape time), one that waited is reported with its
  duration; direct frames get no send span, send event or exemplar;
- :class:`~asgi_rt.FirstMessageAuthMiddleware` :meth:`~SendSeam.revoke` s it before it
  closes a socket (token expired, failed refresh): the manager then sends nothing more;
- control frames (accept, close) always take the whole chain.

A user's own middleware that wraps ``send`` *inside* asgi_rt's outermost one does not see
direct data frames; that is why the option is off by default.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from starlette.types import Message, Scope, Send

from ._directframes import DirectTally

__all__ = ["EXTENSION", "FrameReport", "SendSeam", "install", "seam_of"]

EXTENSION = "asgi_rt.send_seam"  # the key in scope["extensions"]


class FrameReport(Protocol):
    """Told of each data frame written through the seam (TelemetryMiddleware's recorder)."""

    def direct_sent(self, size: int, text: bool, seconds: float) -> None: ...


class SendSeam:
    """One WebSocket connection's seam. Attributes are read by the manager per frame."""

    __slots__ = ("_on_revoke", "_revoked", "_subscribers", "send", "tally")

    def __init__(self, send: Send) -> None:
        # ASGI servers' send is a coroutine function; the manager's inline path steps the
        # coroutine it returns (connections/_inline.py), as it does Starlette's
        self.send: Callable[[Message], Coroutine[Any, Any, None]] = send  # type: ignore[assignment]
        self._subscribers: list[tuple[FrameReport, DirectTally | None]] = []
        self.tally: DirectTally | None = None  # the only subscriber's: the manager's hot path
        self._revoked: tuple[int, str] | None = None
        self._on_revoke: Callable[[int, str], None] | None = None

    def report_to(self, report: FrameReport, tally: DirectTally | None = None) -> None:
        """Have ``report`` told of every frame written through the seam from now on (as
        well as any earlier subscriber: two telemetry layers each count); with ``tally``,
        frames whose send completed at once are added to it instead."""
        self._subscribers.append((report, tally))
        self.tally = tally if len(self._subscribers) == 1 else None

    def sent(self, message: Message, size: int, seconds: float) -> None:
        """A data frame was written through the seam (or attempted: a failed or cut-off
        send is counted, as the middleware's wrapper counts it), taking ``seconds``."""
        text = message.get("text") is not None
        for report, tally in self._subscribers:
            if tally is not None and seconds == 0.0:
                tally.add(size, text)
            else:
                report.direct_sent(size, text, seconds)

    @property
    def revoked(self) -> bool:
        return self._revoked is not None

    def on_revoke(self, callback: Callable[[int, str], None]) -> None:
        """Call ``callback(code, reason)`` (once) when the seam is revoked; at once if it
        already is."""
        if self._revoked is not None:
            callback(*self._revoked)
            return
        self._on_revoke = callback

    def revoke(self, code: int, reason: str) -> None:
        """No data frame may be written through the seam any more: the middleware is
        closing the socket with ``code`` and ``reason`` (what the manager then reports)."""
        if self._revoked is not None:
            return
        self._revoked = (code, reason)
        callback, self._on_revoke = self._on_revoke, None
        if callback is not None:
            callback(code, reason)


def install(scope: Scope, send: Send) -> SendSeam:
    """The scope's seam; installed with ``send`` if no asgi_rt middleware did so before."""
    seam = seam_of(scope)
    if seam is None:
        seam = SendSeam(send)
        scope["extensions"] = {**(scope.get("extensions") or {}), EXTENSION: seam}
    return seam


def seam_of(scope: Scope) -> SendSeam | None:
    extensions = scope.get("extensions")
    seam = extensions.get(EXTENSION) if extensions else None
    return seam if isinstance(seam, SendSeam) else None
