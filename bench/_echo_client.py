"""The echo client process: N connections, each a closed loop of round trips.

Run by ``bench.echo`` as ``python -m bench._echo_client '<json config>'``; prints one JSON
line with the results. Every connection sends one text frame, waits for its echo, sends
the next, ``warmup`` times and then ``round_trips`` times; all connections start the
measured phase together (after every one finished its warm-up). A round trip's latency
is the echo's receive time (taken right after the ``recv``) minus its send time.

Afterwards every connection sends a close frame (1000) and waits for the server's, then
the client reads ``GET /stats`` so the orchestrator can check what the server recorded.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from ._meter import Meter
from ._stats import percentile
from ._wsclient import OP_CLOSE, OP_TEXT, Reactor, WSConn, http_get_json, mask_frame

_perf_ns = time.perf_counter_ns


@dataclass
class Config:
    port: int
    server_pid: int
    clients: int
    round_trips: int
    warmup: int
    payload: int
    path: str = "/echo"
    phase_limit: float = 120.0


class EchoClient:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.reactor = Reactor()
        # A valid envelope of cfg.payload bytes, so that the router variant can decode it;
        # the plain echo variants send it back unchanged all the same.
        filler = bytes((ord("a") + i % 26) for i in range(max(0, cfg.payload - 25)))
        body = b'{"type":"echo","data":"' + filler + b'"}'
        self.body = body
        # The same masked frame every time: the mask key does not matter to the server,
        # and masking per frame would cost the client more than the server's echo.
        self.frame = mask_frame(OP_TEXT, body)
        n = cfg.clients
        self.sent_ns = [0] * n
        self.left = [0] * n
        self.finished = 0
        self.latencies: list[int] = []
        self.mismatches = 0
        self.conns: list[WSConn] = []

    def _handler(self, i: int) -> Any:
        sent_ns, left, body, frame = self.sent_ns, self.left, self.body, self.frame
        n_body = len(body)

        def on_frame(conn: WSConn, data: bytes, start: int, end: int, now: int) -> None:
            if end - start != n_body or data[start:end] != body:
                self.mismatches += 1
            self.latencies.append(now - sent_ns[i])
            left[i] -= 1
            if left[i] > 0:
                sent_ns[i] = _perf_ns()
                conn.write(frame)
            else:
                self.finished += 1

        return on_frame

    def connect(self) -> float:
        t0 = time.perf_counter()
        self.conns = [
            self.reactor.open(self.cfg.port, self.cfg.path, self._handler(i))
            for i in range(self.cfg.clients)
        ]
        if not self.reactor.run_until(lambda: all(c.opened or c.closed for c in self.conns), 20.0):
            raise RuntimeError("handshakes timed out")
        failed = [c.error for c in self.conns if c.closed]
        if failed:
            raise RuntimeError(f"{len(failed)} connections failed: {failed[0]}")
        return time.perf_counter() - t0

    def run(self, count: int) -> tuple[bool, float]:
        """Every connection does ``count`` round trips; (all done, elapsed seconds)."""
        self.finished = 0
        for i in range(len(self.conns)):
            self.left[i] = count
        t0 = time.perf_counter()
        for i, conn in enumerate(self.conns):
            self.sent_ns[i] = _perf_ns()
            conn.write(self.frame)
        n = len(self.conns)
        done = self.reactor.run_until(lambda: self.finished >= n, self.cfg.phase_limit)
        return done, time.perf_counter() - t0

    def measure(self) -> dict[str, Any]:
        cfg = self.cfg
        out: dict[str, Any] = {}
        if cfg.warmup:
            done, _ = self.run(cfg.warmup)
            if not done:
                return {"error": f"warm-up timed out ({self.finished}/{cfg.clients} finished)"}
        self.latencies = []
        self.mismatches = 0
        meter = Meter(self.reactor, cfg.server_pid)
        done, elapsed = self.run(cfg.round_trips)
        usage = meter.stop(elapsed)
        lat = sorted(self.latencies)
        if not done:
            out["error"] = (
                f"measured phase hit its {cfg.phase_limit:.0f} s limit "
                f"({self.finished}/{cfg.clients} finished, {len(lat)} round trips)"
            )
        out.update(
            round_trips=len(lat),
            expected=cfg.clients * cfg.round_trips,
            elapsed_s=elapsed,
            rt_per_s=len(lat) / elapsed if elapsed > 0 else 0.0,
            p50_ms=percentile(lat, 0.50),
            p99_ms=percentile(lat, 0.99),
            max_ms=lat[-1] / 1e6 if lat else float("nan"),
            mismatches=self.mismatches,
            **usage,
        )
        return out

    def close_all(self) -> dict[str, Any]:
        """Close every connection with 1000; how many got the server's close frame back."""
        for conn in self.conns:
            conn.write_frame(OP_CLOSE, (1000).to_bytes(2, "big"))
        self.reactor.run_until(lambda: all(c.closed for c in self.conns), 10.0)
        return {
            "closed_by_server_reply": sum(1 for c in self.conns if c.close_code == 1000),
            "still_open": sum(1 for c in self.conns if not c.closed),
            "conn_errors": sorted({c.error for c in self.conns if c.error})[:3],
        }

    def server_stats(self) -> dict[str, Any]:
        try:
            result: dict[str, Any] = http_get_json(self.cfg.port, "/stats", timeout=30)
        except (OSError, ValueError) as exc:
            return {"error": repr(exc)}
        return result


def main() -> None:
    cfg = Config(**json.loads(sys.argv[1]))
    client = EchoClient(cfg)
    result: dict[str, Any] = {"connect_s": client.connect()}
    result.update(client.measure())
    result["close"] = client.close_all()
    time.sleep(0.3)  # let the server finish the handlers (and record the closes)
    result["server"] = client.server_stats()
    result["sent_total"] = cfg.clients * (cfg.warmup + cfg.round_trips)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
