"""Counting refusals by reason and telling a user hook, which must never break traffic."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from starlette.types import Scope

__all__ = ["Outcomes", "ReasonHook"]

logger = logging.getLogger("asgi_rt.middleware")

ReasonHook = Callable[[str, Scope], None]


class Outcomes:
    """A ``Counter`` of reasons plus an optional ``hook(reason, scope)``, called failsafe."""

    __slots__ = ("hook", "hook_name", "stats")

    def __init__(self, stats: Counter[str] | None, hook: ReasonHook | None, hook_name: str) -> None:
        self.stats: Counter[str] = Counter() if stats is None else stats
        self.hook = hook
        self.hook_name = hook_name

    def record(self, reason: str, scope: Scope) -> None:
        self.stats[reason] += 1
        if self.hook is None:
            return
        try:
            self.hook(reason, scope)
        except Exception:  # a broken hook is the user's bug, never the connection's
            logger.exception("%s hook raised for %r; carrying on", self.hook_name, reason)
