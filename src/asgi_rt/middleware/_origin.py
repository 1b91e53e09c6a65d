"""Parsing and matching of the ``Origin`` header (RFC 6454) for the handshake allowlist.

An origin is ``scheme://host[:port]`` and nothing else: no userinfo, path, query or
fragment. Hosts compare case-insensitively after IDNA encoding; a default port
(80 for http/ws, 443 for https/wss) is the same as no port. Anything that does not
parse is refused, never an exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Origin", "OriginPattern", "parse_origin", "parse_pattern"]

DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_SCHEME = re.compile(r"[a-z][a-z0-9+.\-]*\Z")
_LABEL = re.compile(r"(?!-)[a-z0-9\-]{1,63}(?<!-)\Z")
_IPV6 = re.compile(r"\[[0-9a-f:.]+\]\Z")


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str  # lower-case ASCII (IDNA), or a bracketed IPv6 literal
    port: int | None  # None when absent or the scheme's default


@dataclass(frozen=True, slots=True)
class OriginPattern:
    """One allowlist entry: an exact origin, ``scheme://*.domain[:port]``, or ``*``."""

    scheme: str | None  # None for "*"
    host: str
    port: int | None
    wildcard: bool  # host is a parent domain; any proper subdomain matches

    def matches(self, origin: Origin) -> bool:
        if self.scheme is None:
            return True
        if origin.scheme != self.scheme or origin.port != self.port:
            return False
        if not self.wildcard:
            return origin.host == self.host
        return origin.host.endswith("." + self.host)


def parse_origin(value: str) -> Origin | None:
    """Parse a serialized origin; ``None`` if it is malformed (or ``null``)."""
    scheme, sep, rest = value.partition("://")
    scheme = scheme.lower()
    if not sep or not _SCHEME.match(scheme) or not rest:
        return None
    if any(c in rest for c in "/?#@\\ \t") or rest != rest.strip():
        return None
    host, port = _split_port(rest)
    if port == -1:
        return None
    ascii_host = _normalise_host(host)
    if ascii_host is None:
        return None
    if port is not None and DEFAULT_PORTS.get(scheme) == port:
        port = None
    return Origin(scheme, ascii_host, port)


def parse_pattern(value: str) -> OriginPattern:
    """Parse an allowlist entry.

    Raises:
        ValueError: the entry is not an origin, ``*.domain`` wildcard origin, or ``*``.
    """
    if value == "*":
        return OriginPattern(None, "", None, False)
    wildcard = "://*." in value
    origin = parse_origin(value.replace("://*.", "://", 1) if wildcard else value)
    if origin is None or "*" in value.replace("://*.", "", 1):
        raise ValueError(
            f"malformed origin pattern {value!r}: expected 'scheme://host[:port]', "
            "'scheme://*.domain[:port]' or '*'"
        )
    if wildcard and "." not in origin.host.strip("[]"):
        raise ValueError(f"wildcard origin pattern {value!r} must name a domain like *.example.com")
    return OriginPattern(origin.scheme, origin.host, origin.port, wildcard)


def _split_port(rest: str) -> tuple[str, int | None]:
    """Split ``host[:port]``; port -1 means malformed."""
    if rest.startswith("["):
        end = rest.find("]")
        if end == -1:
            return rest, -1
        host, tail = rest[: end + 1], rest[end + 1 :]
        if not tail:
            return host, None
        if not tail.startswith(":"):
            return host, -1
        return host, _port(tail[1:])
    host, sep, port = rest.rpartition(":")
    if not sep:
        return rest, None
    return host, _port(port)


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        return -1
    number = int(text)
    return number if 0 < number <= 65535 else -1


def _normalise_host(host: str) -> str | None:
    host = host.lower()
    if _IPV6.match(host):
        return host
    if not host or ".." in host or host.endswith("."):
        return None
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    labels = ascii_host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    return ascii_host
