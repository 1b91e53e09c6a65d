"""Autobahn conformance through the full middleware stack, with bare Starlette as the baseline.

kosoku (a Python 3 runner of the Autobahn TestSuite cases) drives a real uvicorn serving
``tests._conformance_app``: ``bare`` (plain Starlette echo) and ``stacked`` (the same echo
through TelemetryMiddleware, HandshakeMiddleware and a ConnectionManager). The stack must
fail no case that bare Starlette passes, under each of uvicorn's WebSocket implementations.

kosoku writes an Autobahn report (``index.json`` plus a JSON and an HTML file per case) into
``-o``, here a tmp dir, and exits 1 when any case failed. The verdicts are read from the report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ._poll import wait_for
from ._system import free_port, listening, spawn_uvicorn

pytestmark = pytest.mark.server

# The command line; kosoku connects to ws://<address>/ for every case.
KOSOKU_ARGS = ["-m", "fuzzingclient", "-x", "9.*", "-x", "12.*", "-x", "13.*", "-p", "2"]
# kosoku's pass rule: both verdicts (message exchange and closing handshake) are one of these
ACCEPTABLE = {"OK", "NON-STRICT", "INFORMATIONAL"}
IMPLS = ["websockets", "websockets-sansio", "wsproto"]
# What bare Starlette itself fails under each implementation: the stack may fail these, no more.
KNOWN_BARE_FAILURES: dict[str, set[str]] = {
    "websockets": set(),
    "wsproto": set(),
    # websockets' Sans-I/O protocol (uvicorn's default, `--ws auto`) answers a close frame that
    # arrives inside a fragmented message with 1002 "incomplete fragmented message"; Autobahn
    # wants 1000. The legacy protocol answers 1000. Drop this once websockets does too.
    "websockets-sansio": {"7.1.5"},
}


@dataclass(frozen=True)
class Run:
    """One kosoku run: every case's verdicts, and the failed cases in detail."""

    verdicts: dict[str, tuple[str, str]]  # case id -> (behavior, behaviorClose)
    details: dict[str, str]  # failed case id -> what it checks and what happened
    server_log: Path

    @property
    def failed(self) -> set[str]:
        return set(self.details)

    def explain(self) -> str:
        lines = [f"  {case}: {detail}" for case, detail in sorted(self.details.items())]
        return "\n".join([*lines, f"  (uvicorn's log: {self.server_log})"])


def kosoku_binary() -> str:
    """kosoku from this interpreter's environment (``.venv/bin`` need not be on PATH)."""
    beside = Path(sys.executable).with_name("kosoku")
    found = str(beside) if beside.exists() else shutil.which("kosoku")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kosoku is not installed; `make test` installs it from .[dev]")
        pytest.skip("kosoku is not installed (pip install kosoku==0.1.0)")
    return found


@pytest.fixture(scope="module")
def autobahn(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Run]:
    """``autobahn(app, ws)``: the cases against ``tests._conformance_app:<app>`` under
    ``uvicorn --ws <ws>``; each pair runs once per module (the baseline is shared)."""
    kosoku = kosoku_binary()
    runs: dict[tuple[str, str], Run] = {}

    def run(app: str, ws: str) -> Run:
        if (app, ws) not in runs:
            runs[app, ws] = run_autobahn(kosoku, app, ws, tmp_path_factory.mktemp(f"{app}-{ws}"))
        return runs[app, ws]

    return run


def run_autobahn(kosoku: str, app: str, ws: str, workdir: Path) -> Run:
    port, server_log, outdir = free_port(), workdir / "uvicorn.log", workdir / "reports"
    with server_log.open("wb") as log:
        server = spawn_uvicorn(f"tests._conformance_app:{app}", port, "--ws", ws,
                               stderr=log.fileno())  # fmt: skip
    try:
        wait_for(lambda: listening(port) or server.poll() is not None, 30, "uvicorn")
        assert server.poll() is None, f"uvicorn exited with {server.returncode}: {server_log}"
        command = [kosoku, *KOSOKU_ARGS, "-o", str(outdir), f"127.0.0.1:{port}"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        server.kill()
        server.wait()
    return read_report(done, outdir, server_log)


def read_report(done: subprocess.CompletedProcess[str], outdir: Path, server_log: Path) -> Run:
    output = f"kosoku exited {done.returncode}:\n{done.stdout}{done.stderr}"
    assert (outdir / "index.json").exists(), output
    verdicts: dict[str, tuple[str, str]] = {}
    details: dict[str, str] = {}
    for cases in json.loads((outdir / "index.json").read_text()).values():  # one per agent
        for case, entry in cases.items():
            verdicts[case] = (entry["behavior"], entry["behaviorClose"])
            if not set(verdicts[case]) <= ACCEPTABLE:
                details[case] = describe(json.loads((outdir / entry["reportfile"]).read_text()))
    assert verdicts, output
    # kosoku's exit status must agree with our reading of its report (it may crash on the
    # way out after writing the report; then there is no status to compare)
    if done.returncode in (0, 1):
        assert done.returncode == (1 if details else 0), output
    return Run(verdicts, details, server_log)


def describe(case: dict[str, Any]) -> str:
    return (
        f"{case['description']!r} -> behavior={case['behavior']} ({case['result']}), "
        f"close={case['behaviorClose']} ({case['resultClose']}), "
        f"server sent close {case['remoteCloseCode']} {case['remoteCloseReason']!r}"
    )


@pytest.mark.parametrize("ws", IMPLS)
def test_bare_starlette_fails_only_the_known_cases(
    autobahn: Callable[[str, str], Run], ws: str
) -> None:
    bare = autobahn("bare", ws)
    assert bare.failed == KNOWN_BARE_FAILURES[ws], bare.explain()


@pytest.mark.parametrize("ws", IMPLS)
def test_full_stack_fails_no_case_that_bare_starlette_passes(
    autobahn: Callable[[str, str], Run], ws: str
) -> None:
    bare, stacked = autobahn("bare", ws), autobahn("stacked", ws)
    assert stacked.verdicts.keys() == bare.verdicts.keys()
    assert stacked.failed == bare.failed, f"stacked:\n{stacked.explain()}\nbare:\n{bare.explain()}"


@pytest.mark.parametrize("ws", IMPLS)
def test_full_stack_never_raises_into_the_server(
    autobahn: Callable[[str, str], Run], ws: str
) -> None:
    """Case 7.1.6 (a big message, then close and ping back to back) once made the echo loop
    send into a closing connection; receive now ends as soon as a close is decided."""
    log = autobahn("stacked", ws).server_log.read_text(errors="replace")
    assert "Exception in ASGI application" not in log, log[-3000:]
