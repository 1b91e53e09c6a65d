"""The public surface: __all__ lists exactly what is exported, and it all imports."""

from __future__ import annotations

import importlib

import pytest

import asgi_rt

PUBLIC_MODULES = [
    "asgi_rt",
    "asgi_rt.connections",
    "asgi_rt.exceptions",
    "asgi_rt.injection",
    "asgi_rt.middleware",
    "asgi_rt.middleware.auth",
    "asgi_rt.middleware.handshake",
    "asgi_rt.middleware.telemetry",
    "asgi_rt.metrics",
    "asgi_rt.looplag",
    "asgi_rt.messages",
    "asgi_rt.client",
    "asgi_rt.backends",
    "asgi_rt.backends.redis",
    "asgi_rt.backends.nats",
    "asgi_rt.backends.envelope",
    "asgi_rt.rooms",
    "asgi_rt.sse",
    "asgi_rt.testing",
    "asgi_rt.types",
    "asgi_rt.wire",
    "asgi_rt.rooms_protocol",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert missing == []


def test_design_contract_names_are_exported_at_the_top() -> None:
    names = ["ConnectionManager", "Connection", "Overflow", "AsgiRtError", "HandshakeMiddleware",
             "FirstMessageAuthMiddleware", "TelemetryMiddleware", "Metrics",
             "metrics_app"]  # fmt: skip
    for name in names:
        assert name in asgi_rt.__all__


def test_errors_carry_code_and_reason() -> None:
    err = asgi_rt.MessageTooBig("frame of 2000 bytes exceeds 1024")
    assert (err.code, err.reason) == (1009, "message too big")
    assert isinstance(err, asgi_rt.ProtocolViolation)
    assert isinstance(err, asgi_rt.AsgiRtError)
    assert "code=1009" in repr(err)


def test_only_errors_about_closing_carry_a_close_code() -> None:
    assert (asgi_rt.RequestFailed("no ack").code, asgi_rt.HistoryGap().code) == (None, None)
    assert (asgi_rt.PoolExhausted().code, asgi_rt.OutboxFull().code) == (None, None)
    assert asgi_rt.RequestFailed("no ack").reason == "request failed"
    assert (asgi_rt.Forbidden("join", "r").code, asgi_rt.InvalidData().code) == (1008, 1007)


def test_dashboard_command_prints_importable_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from asgi_rt.__main__ import main

    assert main(["dashboard"]) == 0
    dashboard = json.loads(capsys.readouterr().out)
    assert dashboard["uid"] == "asgi-rt"
    assert all(t["expr"].startswith(("sum", "histogram_quantile", "min"))
               for p in dashboard["panels"] for t in p["targets"])  # fmt: skip
