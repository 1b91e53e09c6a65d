"""What the fan-out client processes share: N receivers, one publisher, a closed loop.

``bench._fanout_client`` (WebSocket) and ``bench._sse_client`` (SSE) each subclass
:class:`BroadcastClient` with how to open the connections and how to publish; the phases,
the closed loop and the measurements are here. Run as ``python -m <client> '<json
config>'``; prints one JSON line with the results.

Each broadcast carries a global sequence number (``%07d``), the publish timestamp and
padding up to the payload size (:func:`message`). The publisher sends broadcast ``i``,
waits until every healthy receiver has it (or ``broadcast_timeout``), then sends
``i + 1``. A timeout ends the phase: the fan-out is reported as stalled after the
broadcasts that completed. A delivery's latency is its receive time (taken right after
the ``recv``) minus the publish time, both ``time.perf_counter_ns`` in this process.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from ._meter import Meter
from ._proc import vm_rss_kib
from ._stats import percentile
from ._wsclient import Reactor, WSConn, http_get_json, raise_nofile_limit


@dataclass
class PhaseSpec:
    name: str
    payload: int
    warmup: int
    broadcasts: int
    stalled: bool = False


@dataclass
class Config:
    port: int
    stall_port: int | None
    server_pid: int
    variant: str
    receivers: int
    phases: list[PhaseSpec]
    broadcast_timeout: float = 5.0
    phase_limit: float = 60.0
    stalled_rcvbuf: int = 4096
    batch: int = 100

    @classmethod
    def from_json(cls, text: str) -> Config:
        raw = json.loads(text)
        raw["phases"] = [PhaseSpec(**p) for p in raw["phases"]]
        return cls(**raw)


@dataclass
class Stalled:
    conn: WSConn
    seq_last: int = -1
    seen: set[int] = field(default_factory=set)


def message(seq: int, size: int) -> tuple[int, bytes]:
    """(publish time, broadcast ``seq`` padded to ``size`` bytes)."""
    now = time.perf_counter_ns()
    body = b"%07d %019d " % (seq, now)
    return now, body + b"x" * (size - len(body))


class BroadcastClient(ABC):
    """The closed loop over the connections a subclass opens.

    A subclass opens the ``"receiver"`` and ``"stalled"`` connections (:meth:`open`) and the
    publisher (:meth:`open_publisher`), and publishes (:meth:`publish`); its receivers'
    handlers pass each broadcast's sequence number to :meth:`deliver`, the stalled peer's
    to :meth:`stalled_got`. :meth:`phase_extras` and :meth:`stalled_end` add to the results.
    """

    stall_drain = 3.0  # seconds the stalled peer gets to read what it was sent, at the end
    # Also read the server's VmRSS before and after each phase, and every 50 broadcasts
    # while a peer is stalled.
    trace_rss = False

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.reactor = Reactor()
        total = sum(p.warmup + p.broadcasts for p in cfg.phases)
        self.pub_ns = [0] * total
        self.counts = [0] * total
        self.sink: list[list[int] | None] = [None] * total
        self.seq = 0
        self.expected = 0
        self.receivers: list[WSConn] = []
        self.lost = 0
        self.duplicates = 0
        self.publisher: WSConn | None = None
        self.stalled: Stalled | None = None

    # what a subclass provides --------------------------------------------------------------

    @abstractmethod
    def open(self, port: int, role: str, n: int, rcvbuf: int | None = None) -> list[WSConn]:
        """``n`` connections for ``role`` (``"receiver"`` or ``"stalled"``), ready."""

    @abstractmethod
    def open_publisher(self) -> WSConn: ...

    @abstractmethod
    def publish(self, body: bytes) -> None: ...

    @abstractmethod
    def phase_extras(self, spec: PhaseSpec) -> dict[str, Any]:
        """More results of a phase whose warm-up went through."""

    @abstractmethod
    def stalled_end(self, stalled: Stalled, first: int) -> dict[str, Any]:
        """How the stalled peer's connection ended, beyond ``connection_closed``."""

    # the hot path --------------------------------------------------------------------------

    def deliver(self, conn: WSConn, seq: int, now: int) -> None:
        if not conn.track(seq):
            self.duplicates += 1
            return
        self.counts[seq] += 1
        sink = self.sink[seq]
        if sink is not None:
            sink.append(now - self.pub_ns[seq])

    def stalled_got(self, seq: int) -> None:
        stalled = self.stalled
        assert stalled is not None
        stalled.seq_last = seq
        stalled.seen.add(seq)

    def on_receiver_lost(self, conn: WSConn) -> None:
        self.lost += 1
        self.expected -= 1

    # connections ---------------------------------------------------------------------------

    def connect_all(self) -> float:
        t0 = time.perf_counter()
        for i in range(0, self.cfg.receivers, self.cfg.batch):
            n = min(self.cfg.batch, self.cfg.receivers - i)
            batch = self.open(self.cfg.port, "receiver", n)
            for conn in batch:
                conn.on_lost = self.on_receiver_lost
            self.receivers.extend(batch)
        self.expected = len(self.receivers)
        self.publisher = self.open_publisher()
        return time.perf_counter() - t0

    def connect_stalled(self) -> None:
        port = self.cfg.stall_port or self.cfg.port
        conn = self.open(port, "stalled", 1, rcvbuf=self.cfg.stalled_rcvbuf)[0]
        self.stalled = Stalled(conn)
        self.reactor.pause(conn)
        # let the server register it before the first broadcast
        self.reactor.run_until(lambda: False, 0.2)

    # the closed loop -----------------------------------------------------------------------

    def broadcast(self, payload_size: int) -> bool:
        seq = self.seq
        self.seq += 1
        self.pub_ns[seq], body = message(seq, payload_size)
        self.publish(body)
        counts = self.counts
        return self.reactor.run_until(
            lambda: counts[seq] >= self.expected, self.cfg.broadcast_timeout
        )

    def server_stats(self) -> dict[str, Any]:
        try:
            result: dict[str, Any] = http_get_json(self.cfg.port, "/stats")
        except (OSError, ValueError) as exc:
            return {"error": repr(exc)}
        return result

    def run_phase(self, spec: PhaseSpec) -> dict[str, Any]:
        out: dict[str, Any] = {"payload": spec.payload, "broadcasts_planned": spec.broadcasts}
        pid = self.cfg.server_pid
        rss0 = vm_rss_kib(pid) if self.trace_rss else -1  # before the stalled peer joins
        if spec.stalled:
            self.connect_stalled()
        error = self.warm_up(spec)
        if error:
            out.update(error=error, server=self.server_stats())
            return out
        first, healthy = self.seq, self.expected
        latencies: list[int] = []
        for s in range(first, first + spec.broadcasts):
            self.sink[s] = latencies
        meter = Meter(self.reactor, pid)
        rss_trace: list[tuple[int, int]] = []
        completed, elapsed, wall = self.closed_loop(spec, out, rss_trace)
        usage = meter.stop(wall)
        delivered = sum(self.counts[first : first + spec.broadcasts])
        for s in range(first, first + spec.broadcasts):
            self.sink[s] = None
        latencies.sort()
        out.update(
            healthy=healthy,
            broadcasts_completed=completed,
            delivered=delivered,
            expected=healthy * spec.broadcasts,
            completeness=delivered / (healthy * spec.broadcasts) if healthy else 0.0,
            elapsed_s=elapsed,
            msgs_per_s=delivered / elapsed if elapsed > 0 else 0.0,
            p50_ms=percentile(latencies, 0.50),
            p99_ms=percentile(latencies, 0.99),
            max_ms=latencies[-1] / 1e6 if latencies else math.nan,
            **usage,
            receivers_lost=self.lost,
            duplicates=self.duplicates,
            misordered=sum(r.misordered for r in self.receivers),
        )
        if self.trace_rss:
            out.update(server_rss_kib_before=rss0, server_rss_kib_after=vm_rss_kib(pid))
            out["server_rss_trace"] = rss_trace
        out.update(self.phase_extras(spec))
        out["server"] = self.server_stats()
        if spec.stalled:
            out["stalled_peer"] = self.stalled_fate(first)
        return out

    def closed_loop(
        self, spec: PhaseSpec, out: dict[str, Any], rss_trace: list[tuple[int, int]]
    ) -> tuple[int, float, float]:
        """The measured broadcasts: (how many completed, seconds to the last, seconds in all).

        Notes in ``out`` where a broadcast timed out or the phase hit its time limit.
        """
        t0 = t_done = time.perf_counter()
        completed = 0
        for _ in range(spec.broadcasts):
            if not self.broadcast(spec.payload):
                out["stalled_after"] = completed
                out["stalled_got"] = self.counts[self.seq - 1]
                break
            completed += 1
            if self.trace_rss and spec.stalled and completed % 50 == 0:
                rss_trace.append((completed, vm_rss_kib(self.cfg.server_pid)))
            t_done = time.perf_counter()
            if t_done - t0 > self.cfg.phase_limit:
                out["time_limit_after"] = completed
                break
        return completed, t_done - t0, time.perf_counter() - t0

    def warm_up(self, spec: PhaseSpec) -> str | None:
        """Unmeasured broadcasts; an error message if one of them timed out."""
        for done in range(spec.warmup):
            if not self.broadcast(spec.payload):
                got = self.counts[self.seq - 1]
                return f"warm-up broadcast {done} timed out ({got}/{self.expected} got it)"
        return None

    def stalled_fate(self, first: int) -> dict[str, Any]:
        """Resume reading on the stalled peer: what had it been sent, and how did it end?"""
        stalled = self.stalled
        assert stalled is not None
        conn = stalled.conn
        self.reactor.resume(conn)
        last_sent = self.seq - 1
        self.reactor.run_until(
            lambda: conn.closed or stalled.seq_last >= last_sent, self.stall_drain
        )
        return {
            "received_measured": sum(1 for s in stalled.seen if s >= first),
            "sent_measured": last_sent - first + 1,
            **self.stalled_end(stalled, first),
            "connection_closed": conn.closed,
            "error": conn.error,
        }


def main(client: type[BroadcastClient], config: type[Config] = Config) -> None:
    raise_nofile_limit()
    cfg = config.from_json(sys.argv[1])
    bench = client(cfg)
    result: dict[str, Any] = {"variant": cfg.variant, "phases": {}}
    result["connect_s"] = bench.connect_all()
    for spec in cfg.phases:
        result["phases"][spec.name] = bench.run_phase(spec)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip closing a thousand sockets one by one
