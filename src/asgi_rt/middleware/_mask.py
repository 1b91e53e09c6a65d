"""Masking tokens out of text we log: by pattern, not only the exact string.

A hook that fails often quotes part of what it was given (``"unknown key id in
eyJhbGciOi..."``, ``token[:16]``), so replacing the exact token is not enough. Every run
of token-like characters that shares :data:`MIN_SHARED` characters in a row with the
token is masked, and so is anything shaped like a bearer credential or a JWT.
"""

from __future__ import annotations

import re

__all__ = ["MIN_SHARED", "mask"]

MIN_SHARED = 6  # a shared run this long is "part of the token"; shorter ones are words
MASK = "***"
_RUN = re.compile(r"[A-Za-z0-9._~+/=-]+")
_SHAPED = re.compile(
    r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"  # an Authorization value (RFC 6750)
    r"|eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){0,2}"  # a JWT, or its first part
)


def mask(text: str, token: str) -> str:
    """``text`` with ``token``, any part of it and any credential-shaped run as ``***``."""
    size = min(MIN_SHARED, len(token))
    grams = {token[i : i + size] for i in range(len(token) - size + 1)} if size else set()

    def hide(run: re.Match[str]) -> str:
        word = run.group()
        shares = any(word[i : i + size] in grams for i in range(len(word) - size + 1))
        return MASK if shares else word

    text = _RUN.sub(hide, text) if grams else text
    return _SHAPED.sub(lambda m: (m.group(1) or "") + MASK, text)
