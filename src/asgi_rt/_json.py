"""The one JSON decoder and the one JSON encoder: what comes in is bounded, what goes out is JSON.

Inbound text is hostile: :func:`loads` refuses nesting deeper than ``max_depth`` (the C
decoder would raise ``RecursionError`` at about 1,000 levels, which nothing catches),
``NaN``/``Infinity`` literals and numbers that overflow to infinity (not JSON, and
``JSON.parse`` cannot produce them), and escaped lone surrogates such as ``"\\ud800"``
(no UTF-8 encoding exists, so the value could never be sent back). Every refusal is a
:class:`BadJSON`, a ``ValueError``, as the standard decoder's errors are.

Outbound data is refused at the caller: :func:`dumps` raises ``TypeError``/``ValueError``
naming the value and where in the structure it sits, instead of emitting ``NaN`` (which a
browser's ``JSON.parse`` rejects) or a lone surrogate (which kills the socket that tries
to write it).

The hot path costs two ``str.count`` calls for a frame long enough to be deep and two ``in``
tests for a ``\\ud`` escape; the exact checks run only when those say they might matter.
Refusing numbers that overflow costs a Python call per float literal (about 0.1 µs).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

__all__ = ["DEFAULT_MAX_DEPTH", "BadJSON", "check_depth", "dumps", "explain", "loads", "shorten"]

DEFAULT_MAX_DEPTH = 64

_NOT_SYNTAX = bytes(b for b in range(256) if b not in b'[]{}"\\')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b'[]{}"')
_SURROGATE = re.compile("[\ud800-\udfff]")


class BadJSON(ValueError):
    """Inbound text that is not JSON within our limits."""


def _refuse_constant(name: str) -> Any:
    raise BadJSON(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise BadJSON(f"number {text[:20]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def check_depth(max_depth: int) -> int:
    """Validate a ``max_json_depth`` option (at construction)."""
    if isinstance(max_depth, bool) or not isinstance(max_depth, int):
        raise TypeError(f"max_json_depth must be an int, got {type(max_depth).__name__}")
    if not 1 <= max_depth <= 500:
        raise ValueError(f"max_json_depth must be between 1 and 500, got {max_depth}")
    return max_depth


def loads(raw: str | bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode one JSON text (``bytes`` as UTF-8) within ``max_depth`` levels of nesting.

    Raises:
        BadJSON: too deep, ``NaN``/``Infinity``, an out-of-range number or a lone surrogate.
        ValueError: not JSON at all (``json.JSONDecodeError``), not UTF-8
            (``UnicodeDecodeError``), or an integer over Python's 4,300-digit limit.
    """
    text = raw if isinstance(raw, str) else raw.decode("utf-8")
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise BadJSON(f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        if type(exc) is ValueError:  # int(): Python's 4,300-digit limit, worded for Python users
            raise BadJSON("an integer of over 4300 digits") from None
        raise
    if (
        len(text) > max_depth
        and text.count("[") + text.count("{") > max_depth  # else it cannot be that deep
        and _deeper_than(text, max_depth)
    ):
        raise BadJSON(f"JSON nested deeper than {max_depth} levels")
    if ("\\ud" in text or "\\uD" in text) and _has_lone_surrogate(value):
        raise BadJSON(_where_surrogate(value, len(text)))
    return value


_LOCATE_LIMIT = 64 * 1024  # past this, a bad frame is not searched for the item's path


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a decoded value holds a lone surrogate: re-encoding it in C and asking for
    UTF-8 is linear and fast; walking it in Python costs a microsecond per item."""
    try:
        _ENCODER.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _where_surrogate(value: Any, size: int) -> str:
    """The message for a frame with a lone surrogate: with its path when the frame is small
    (the walk that finds it is Python-speed, so a large hostile frame does not pay it)."""
    found = _find(value, _surrogate) if size <= _LOCATE_LIMIT else None
    return (
        "a lone surrogate (it has no UTF-8 encoding)"
        if found is None
        else (f"{found[1]} at {found[0]}")
    )


def _deeper_than(text: str, max_depth: int) -> bool:
    """Whether valid JSON ``text`` nests deeper than ``max_depth`` (brackets inside strings
    do not count): C-speed byte operations, one pass per level."""
    data = text.encode("utf-8", "surrogatepass")
    kept = data.translate(None, _NOT_SYNTAX)  # brackets, quotes and backslashes
    if b"\\" in kept:  # escaped quotes and backslashes must not delimit strings
        kept = data.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_BRACKET)
    brackets = kept.replace(b'""', b"")  # no quote left: no string held a bracket
    if b'"' in brackets:
        brackets = b"".join(kept.split(b'"')[::2])
    for _ in range(max_depth):  # each pass removes the innermost pairs: one level
        brackets = brackets.replace(b"[]", b"x").replace(b"{}", b"x").replace(b"x", b"")
        if not brackets:
            return False
    return True


def dumps(value: Any) -> str:
    """Encode ``value`` as compact JSON text that any JSON parser accepts.

    Raises:
        TypeError: a value JSON has no form for (``object``, ``set``, a ``tuple`` key...).
        ValueError: ``NaN``/``Infinity``, a lone surrogate, an integer over Python's
            4,300-digit limit, a circular reference, or nesting too deep to encode.
    """
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise explain(value, exc) from None
    if not text.isascii():
        try:
            text.encode("utf-8")  # 3x cheaper than a regex search for a surrogate
        except UnicodeEncodeError as exc:
            raise explain(value, exc) from None
    return text


def explain(value: Any, exc: BaseException) -> TypeError | ValueError:
    """The error to raise for ``value`` that could not be encoded: it names the
    offending value and where it sits (``$`` is the whole value)."""
    if isinstance(exc, RecursionError):
        return ValueError("cannot encode as JSON: nested too deep")
    found = _find(value, _unencodable)
    if found is None:
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        return kind(f"cannot encode as JSON: {exc}")
    path, problem = found
    kind = TypeError if problem.startswith("type ") else ValueError
    return kind(f"cannot encode as JSON: {problem} at {path}")


def _unencodable(item: Any) -> str | None:
    """What makes one leaf (or key) unencodable, or ``None``."""
    if isinstance(item, str):
        return _surrogate(item)
    if isinstance(item, bool) or item is None:
        return None
    if isinstance(item, float):
        return None if math.isfinite(item) else f"{item!r} (JSON has no NaN or Infinity)"
    if isinstance(item, int):
        try:
            str(item)
        except ValueError:
            return "an integer of over 4300 digits"
        return None
    return f"type {type(item).__name__} ({shorten(item)})"


def _surrogate(item: Any) -> str | None:
    if isinstance(item, str) and not item.isascii() and _SURROGATE.search(item) is not None:
        return f"lone surrogate in {shorten(item)} (it has no UTF-8 encoding)"
    return None


def _find(value: Any, problem_of: Callable[[Any], str | None]) -> tuple[str, str] | None:
    """The path (``$['a'][2]``) of the first leaf or key with a problem, and the problem.

    Linear in the number of items: a path is spelled out only for the item found (each
    stack entry keeps its label and its parent's entry), so a wide, deep value costs what
    visiting it costs, not nodes x depth."""
    stack: list[tuple[Any, _Where]] = [(value, None)]
    on_path: set[int] = set()
    while stack:
        item, where = stack.pop()
        if not isinstance(item, dict | list | tuple):
            if (problem := problem_of(item)) is not None:
                return _path(where), problem
            continue
        if id(item) in on_path:
            return _path(where), "a circular reference"
        on_path.add(id(item))  # never removed: a container seen twice is a cycle or shared
        if isinstance(item, dict):
            for key in item:
                problem = problem_of(key) if isinstance(key, str | float) else None
                if problem is None and not isinstance(key, str | int | float | bool | None):
                    problem = f"type {type(key).__name__} ({shorten(key)}) as a key"
                if problem is not None:
                    return f"{_path(where)} (a key)", problem
            children: list[tuple[Any, _Where]] = [(v, (k, where)) for k, v in item.items()]
        else:
            children = [(v, (i, where)) for i, v in enumerate(item)]
        stack.extend(reversed(children))
    return None


_Where = tuple[Any, "_Where"] | None  # (key or index, the parent's) ; None: the whole value


def _path(where: _Where) -> str:
    labels = []
    while where is not None:
        label, where = where
        labels.append(f"[{label}]" if isinstance(label, int) else f"[{shorten(label)}]")
    return "$" + "".join(reversed(labels))


def shorten(item: Any) -> str:
    """``ascii(item)`` cut to 40 characters: safe to put in any message, log or frame."""
    text = ascii(item)
    return text if len(text) <= 40 else text[:37] + "..."
