"""Global and per-client counts of open WebSockets, for HandshakeMiddleware."""

from __future__ import annotations

from starlette.types import Scope

from ._clientip import forwarded_for

__all__ = ["ConnectionLimiter"]


class ConnectionLimiter:
    """Counts open connections; ``acquire`` refuses past a limit, ``release`` frees a slot.

    The counts are shared by every connection through one middleware instance (that is
    their point); they are per process, so with ``--workers N`` each worker counts its own.
    """

    __slots__ = ("_per_client", "header", "max_per_client", "max_total", "open", "trusted_hops")

    def __init__(
        self,
        max_total: int | None,
        max_per_client: int | None,
        header: str | None,
        trusted_hops: int,
    ) -> None:
        for name, value in (("max_connections", max_total),
                            ("max_connections_per_client", max_per_client)):  # fmt: skip
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if trusted_hops < 1:
            raise ValueError(f"trusted_hops must be >= 1, got {trusted_hops}")
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.header = None if header is None else header.lower().encode("latin-1")
        self.trusted_hops = trusted_hops
        self.open = 0
        self._per_client: dict[str, int] = {}

    def acquire(self, scope: Scope) -> tuple[str | None, str | None]:
        """Take a slot: ``(client_key, None)``, or ``(None, reason)`` when refused."""
        if self.max_total is not None and self.open >= self.max_total:
            return None, "max_connections"
        if self.max_per_client is None:
            self.open += 1
            return "", None
        client = self.client_of(scope)
        held = self._per_client.get(client, 0)
        if self.max_per_client is not None and held >= self.max_per_client:
            return None, "max_connections_per_client"
        self._per_client[client] = held + 1
        self.open += 1
        return client, None

    def release(self, client: str | None) -> None:
        """Free the slot ``acquire`` returned (``None``: nothing was taken)."""
        if client is None:
            return
        self.open -= 1
        if not client:
            return
        left = self._per_client[client] - 1
        if left:
            self._per_client[client] = left
        else:
            del self._per_client[client]

    def client_of(self, scope: Scope) -> str:
        if self.header is not None:
            found = forwarded_for(scope["headers"], self.header, self.trusted_hops)
            if found is not None:
                return found
        client = scope.get("client")
        return str(client[0]) if client else "unknown"
