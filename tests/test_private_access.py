"""No object touches another's private attributes anywhere in src (STYLE.md: one owner
per piece of state). ``self._x``, ``cls._x`` and ``super()._x`` are an object's own; any
other ``<expr>._x`` (or ``getattr(<expr>, "_x")``) fails here unless it is listed below.

The allowlist is only for private APIs of code we do not own, each isolated in one
module, with the reason it is needed.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "asgi_rt"

ALLOWED = {
    # Starlette's WebSocket.send/receive add a coroutine frame and state checks per frame;
    # the data path goes to the ASGI callables under them. The one Starlette adapter.
    ("connections/_starlette.py", "transport._send"),
    ("connections/_starlette.py", "transport._receive"),
    # namedtuple's _replace is its documented public API (the underscore avoids field clashes).
    ("client/resilient.py", "parts._replace"),
    # The stack of a stalled loop thread: CPython's documented way (sys._current_frames).
    ("looplag.py", "sys._current_frames"),
}


TESTS = Path(__file__).resolve().parent

TESTS_ALLOWED = {
    # The client's exactly-once filter as a pure function over frames: a table of cases a
    # server could not produce on demand (overlapping replay, epoch changes); the socket
    # path is covered by the resume tests.
    ("client/test_resilient.py", "client._first_time"),
    # this file's own sample code for the checker
    ("test_private_access.py", "conn._sender"),
    ("test_private_access.py", "ws._send"),
}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _own(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"
    )


def _violations(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr) and not _own(node.value):
            found.append((node.lineno, ast.unparse(node)))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _is_private(node.args[1].value)
            and not _own(node.args[0])
        ):
            found.append((node.lineno, f"{ast.unparse(node.args[0])}.{node.args[1].value}"))
    return found


def test_no_access_to_another_objects_private_attributes() -> None:
    offences = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        for line, expr in _violations(ast.parse(path.read_text(), str(path))):
            if (relative, expr) not in ALLOWED:
                offences.append(f"src/asgi_rt/{relative}:{line}: {expr}")
    assert offences == [], "\n".join(offences)


def test_the_check_sees_what_it_must() -> None:
    code = "conn._sender.deliver(m)\ngetattr(ws, '_send')\nself._ok\nsuper()._ok()\ncls._ok\n"
    assert sorted(expr for _, expr in _violations(ast.parse(code))) == ["conn._sender", "ws._send"]


def test_tests_read_no_private_state() -> None:
    """Tests assert what a user sees, not our objects' insides (tests' own helper modules,
    ``tests._x``, are ours to import)."""
    offences = []
    for path in sorted(TESTS.rglob("*.py")):
        relative = path.relative_to(TESTS).as_posix()
        for line, expr in _violations(ast.parse(path.read_text(), str(path))):
            if (relative, expr) not in TESTS_ALLOWED and not expr.startswith("tests."):
                offences.append(f"tests/{relative}:{line}: {expr}")
    assert offences == [], "\n".join(offences)
