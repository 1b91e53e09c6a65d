"""The registry half of ConnectionManager: live connections by id and reserved ids."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

from ..exceptions import DuplicateConnectionId
from .connection import Connection
from .stats import ManagerStats

__all__ = ["ConnectionRegistry"]


class ConnectionRegistry:
    """Connections by id, ids whose handshake is in progress, and the counters over them."""

    def __init__(self) -> None:
        self._connections: dict[str, Connection] = {}
        self._reserved: set[str] = set()  # ids whose handshake is still in progress
        self._stats = ManagerStats()

    def __len__(self) -> int:
        return len(self._connections)

    def __iter__(self) -> Iterator[Connection]:
        return iter(tuple(self._connections.values()))

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Connection):
            return self._connections.get(item.id) is item
        return item in self._connections

    def get(self, id: str) -> Connection | None:
        """The live connection registered as ``id``, or ``None``."""
        return self._connections.get(id)

    def stats(self) -> ManagerStats:
        """A snapshot of this manager's counters."""
        return dataclasses.replace(self._stats, active=len(self._connections))

    def _reserve(self, id: str | None) -> str:
        """Claim ``id`` (or a fresh one) for a handshake in progress."""
        conn_id = uuid.uuid4().hex if id is None else id
        if conn_id in self._connections or conn_id in self._reserved:
            raise DuplicateConnectionId(f"connection id {conn_id!r} is already registered")
        self._reserved.add(conn_id)
        return conn_id

    def _unreserve(self, conn_id: str) -> None:
        self._reserved.discard(conn_id)

    def _add(self, conn: Connection) -> None:
        self._connections[conn.id] = conn
        self._stats.opened += 1

    def _remove(self, conn: Connection) -> None:
        if self._connections.get(conn.id) is conn:
            del self._connections[conn.id]
            self._stats.closed += 1
