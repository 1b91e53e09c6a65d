"""The client's address as the proxies in front of the app saw it.

Every line of the header is read, in order, as one list: a proxy that adds its own
``X-Forwarded-For`` line (HAProxy's ``option forwardfor``) instead of appending to the
client's one leaves the client's forged line first, and reading only that line would
trust it. ``Forwarded`` (RFC 7239) is read from its ``for=`` parameters.
"""

from __future__ import annotations

__all__ = ["forwarded_for"]


def forwarded_for(headers: list[tuple[bytes, bytes]], name: bytes, hops: int) -> str | None:
    """The entry ``hops`` from the right of every ``name`` line joined; ``None`` if too few.

    Args:
        headers: the scope's raw headers.
        name: the lower-case header name (``x-forwarded-for``, ``forwarded``, ...).
        hops: how many proxies you run: the rightmost that many entries were added by them.
    """
    lines = [value.decode("latin-1") for key, value in headers if key == name]
    entries = [e.strip() for e in ",".join(lines).split(",") if e.strip()]
    if name == b"forwarded":
        entries = [_for_node(e) for e in entries]
    return entries[-hops] if len(entries) >= hops else None


def _for_node(element: str) -> str:
    """The address in one ``Forwarded`` element's ``for=`` (``unknown`` when absent)."""
    for pair in element.split(";"):
        key, _, value = pair.strip().partition("=")
        if key.strip().lower() == "for":
            return _node_address(value.strip().strip('"'))
    return "unknown"


def _node_address(node: str) -> str:
    """``[2001:db8::1]:4711`` → ``2001:db8::1``; ``192.0.2.1:80`` → ``192.0.2.1``."""
    if node.startswith("["):
        return node[1:].partition("]")[0]
    return node.partition(":")[0] if node.count(":") == 1 else node
