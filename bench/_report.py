"""How every benchmark reports: progress lines, target checks, notes, the JSON file."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._proc import OUT_DIR, ROOT

Session = dict[str, Any]


def run_each(
    runs: Sequence[tuple[str, Callable[[], Session]]], status: Callable[[Session], str]
) -> list[Session]:
    """Run the sessions in order, with a progress line after each; return them."""
    sessions = []
    for what, run in runs:
        session = run()
        sessions.append(session)
        progress(len(sessions), len(runs), what, session["seconds"], status(session))
    return sessions


def progress(done: int, total: int, what: str, seconds: float, status: str) -> None:
    """One line on stderr as a session ends: ``[done/total] what  seconds  status``."""
    print(f"[{done}/{total}] {what} {seconds:5.1f} s  {status}", file=sys.stderr, flush=True)


def check(name: str, value: float, op: str, target: float) -> str:
    """A target line for the report: PASS, FAIL, or n/a when the value is NaN."""
    ok = value >= target if op == ">=" else value <= target
    verdict = "n/a " if value != value else ("PASS" if ok else "FAIL")
    return f"{verdict}  {name}: {value:.2f} (target {op} {target:g})"


def print_targets(checks: list[str], notes: list[str], heading: str = "") -> None:
    """Print the target lines and any notes, the same way in every benchmark."""
    print(f"\nTargets{heading} (reported, not tuned for):")
    for line in checks:
        print("  " + line)
    print_notes(notes)


def print_notes(notes: list[str]) -> None:
    if notes:
        print("\nNotes:")
        for line in notes:
            print("  " + line)


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``bench/out/<name>`` and say so; return the path."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / name
    out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {out.relative_to(ROOT)}")
    return out
