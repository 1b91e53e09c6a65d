"""Mistakes in assembling the middleware stack are reported once, at startup, by a real
uvicorn (its default ``--lifespan auto``), in one line that names the fix."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from ._poll import wait_for
from ._system import free_port, listening, spawn_uvicorn

pytestmark = pytest.mark.server


@contextmanager
def served(app: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = spawn_uvicorn(f"tests._mistakes_app:{app}", port, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: listening(port) or proc.poll() is not None, 30, "uvicorn")
        assert proc.poll() is None, stderr_of(proc)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)  # reaps it and closes its stderr pipe


def stderr_of(proc: subprocess.Popen[bytes]) -> str:
    """Stop uvicorn (as a deploy would) and return everything it logged."""
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    return err.decode()


def test_a_malformed_allowlist_is_one_line_at_startup_not_a_line_per_request() -> None:
    with served("bad_origins") as (port, proc):
        for _ in range(3):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        log = stderr_of(proc)
    lines = [line for line in log.splitlines() if "is misconfigured" in line]
    assert lines == [
        "HandshakeMiddleware is misconfigured, the app cannot start: malformed origin "
        "pattern 'app.example.com': expected 'scheme://host[:port]', "
        "'scheme://*.domain[:port]' or '*'"
    ], log


def test_handshake_checks_inside_auth_are_reported_naming_the_order() -> None:
    with served("wrong_order") as (_port, proc):
        log = stderr_of(proc)
    lines = [line for line in log.splitlines() if "is inside" in line]
    assert len(lines) == 1, log
    assert lines[0].startswith("HandshakeMiddleware is inside FirstMessageAuthMiddleware")
    assert "add_middleware(FirstMessageAuthMiddleware) before" in lines[0]


def test_an_unreachable_redis_fails_startup_with_one_line_naming_it() -> None:
    dead = free_port()  # nothing listens here
    env = {**os.environ, "ASGI_RT_BACKEND": f"redis://127.0.0.1:{dead}/0"}
    proc = spawn_uvicorn("examples.fastapi_app.app:app", free_port(), env=env,
                         stderr=subprocess.PIPE)  # fmt: skip
    _, err = proc.communicate(timeout=60)  # uvicorn exits: its lifespan startup failed
    log = err.decode()
    assert proc.returncode != 0, log
    [line] = [line for line in log.splitlines() if line.startswith("asgi_rt.")]
    assert line.startswith("asgi_rt.exceptions.BackendUnavailable: PING to Redis at "), line
    assert f"127.0.0.1:{dead}" in line and "is Redis running there?" in line, line
