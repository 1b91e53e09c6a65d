"""Presence: who is in a room across workers, kept alive by each worker's refreshes."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import anyio

from ..backends import BackendUnavailable
from ..backends.base import PresenceStore
from ..connections._encode import Dumps
from ..connections.connection import Connection

__all__ = ["Presence", "default_info"]

logger = logging.getLogger("asgi_rt.rooms")

PresenceInfo = Callable[[Connection], dict[str, Any]]


def default_info(conn: Connection) -> dict[str, Any]:
    """The connection id plus its plain (str/int/float/bool) ``meta`` values."""
    plain = {k: v for k, v in conn.meta.items() if isinstance(v, str | int | float | bool)}
    return {"id": conn.id, **plain}


class Presence:
    """This process's entries in the backend's presence store, refreshed every ``ttl / 3``.

    A worker that dies stops refreshing, and its entries expire after ``ttl`` seconds.
    Presence is auxiliary: a store that is unreachable is logged, never raised to ``join``.
    """

    def __init__(
        self, store: PresenceStore, *, ttl: float, info: PresenceInfo, dumps: Dumps
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"presence_ttl must be > 0, got {ttl!r}")
        self._store, self._ttl, self._info, self._dumps = store, ttl, info, dumps
        self._local: dict[tuple[str, str], bytes] = {}

    async def add(self, room: str, conn: Connection) -> dict[str, Any]:
        info, data = self._describe(conn)
        self._local[(room, conn.id)] = data
        await self._quietly(self._store.presence_add(room, conn.id, data, self._ttl))
        return info

    def _describe(self, conn: Connection) -> tuple[dict[str, Any], bytes]:
        """The member's info and its encoding; a ``presence_info`` hook that raises, or
        returns what cannot be JSON, is logged and the default info is used instead (a
        user hook never breaks a join)."""
        try:
            info = self._info(conn)
            return info, self._dumps(info).encode()
        except Exception:
            logger.exception("presence_info raised for %s; using the default info", conn.id)
            info = default_info(conn)
            return info, self._dumps(info).encode()

    async def remove(self, room: str, conn: Connection) -> dict[str, Any] | None:
        data = self._local.pop((room, conn.id), None)
        if data is None:
            return None
        await self._quietly(self._store.presence_remove(room, conn.id))
        return dict(json.loads(data))

    async def members(self, room: str) -> dict[str, Any]:
        """Every member of ``room`` on every worker: ``{connection id: info}``.

        Raises:
            BackendUnavailable: the presence store cannot be reached.
        """
        return {
            member: json.loads(data) for member, data in (await self._store.presence(room)).items()
        }

    async def refresh_forever(self) -> None:
        while True:
            await anyio.sleep(self._ttl / 3)
            for (room, member), data in list(self._local.items()):
                await self._quietly(self._store.presence_add(room, member, data, self._ttl))

    async def _quietly(self, operation: Any) -> None:
        try:
            await operation
        except BackendUnavailable as exc:
            logger.warning("presence update failed, retried on the next refresh: %s", exc)
