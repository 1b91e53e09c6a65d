"""Mistakes in assembling the middleware stack, reported when the stack is built.

Starlette and FastAPI build the middleware stack on the first ASGI call, which is the
lifespan startup; a constructor that raises there makes uvicorn (``--lifespan auto``,
its default) report "ASGI 'lifespan' protocol appears unsupported" and then answer every
request with a 500, without saying why. So a configuration error in one of our
middlewares is also logged, once per process and message, as one line naming it; and an
order that weakens a check (Origin checked only after accept and auth) is logged too.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.types import ASGIApp

__all__ = ["reports_config_errors", "warn_if_inside"]

logger = logging.getLogger("asgi_rt.middleware")

Init = TypeVar("Init", bound=Callable[..., None])

# messages already logged: a stack rebuilt on every request must not log on every request
_reported: set[str] = set()
MAX_DEPTH = 64  # middleware layers looked through


def reports_config_errors(init: Init) -> Init:
    """Decorate a middleware's ``__init__``: a ValueError/TypeError is logged, then raised."""

    @functools.wraps(init)
    def checked(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except (ValueError, TypeError) as exc:
            line = f"{type(self).__name__} is misconfigured, the app cannot start: {exc}"
            if line not in _reported:
                _reported.add(line)
                logger.error("%s", line)
            raise

    return checked  # type: ignore[return-value]


def warn_if_inside(outer: object, app: ASGIApp, inner: type, why: str) -> None:
    """Log once if an ``inner`` middleware sits inside ``outer`` (``app`` is what it wraps)."""
    layer: Any = app
    for _ in range(MAX_DEPTH):
        if isinstance(layer, inner):
            line = (
                f"{inner.__name__} is inside {type(outer).__name__}: {why}. Put "
                f"{inner.__name__} outside it: add_middleware({type(outer).__name__}) before "
                f"add_middleware({inner.__name__}) (the last added is outermost), or list "
                f"{inner.__name__} first in Starlette(middleware=[...])"
            )
            if line not in _reported:
                _reported.add(line)
                logger.warning("%s", line)
            return
        layer = getattr(layer, "app", None)
        if layer is None:
            return
