"""The fan-out client process: N receivers, one publisher, a closed loop of broadcasts.

Run by ``bench.fanout`` as ``python -m bench._fanout_client '<json config>'``; prints one
JSON line with the results. The publisher and the receivers live in this process, so
a delivery's latency is its receive time minus the publish time (both
``time.perf_counter_ns``; the receive time is taken right after the ``recv``).

Each broadcast carries a global sequence number (``%07d``), the publish timestamp and
padding up to the payload size. The publisher sends broadcast ``i``, waits until every
healthy receiver has it (or ``broadcast_timeout``), then sends ``i + 1``. A timeout ends
the phase: the fan-out is reported as stalled after the broadcasts that completed.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ._wsclient import Reactor, WSConn, http_get_json, raise_nofile_limit

SIO_OFFSET = len(b'42["msg","')  # where the payload starts in a socket.io event frame
SIO_PATH = "/socket.io/?EIO=4&transport=websocket"
_C0, _C2, _C4 = ord("0"), ord("2"), ord("4")


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


def percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted ns values, in ms."""
    if not sorted_ns:
        return math.nan
    return sorted_ns[max(1, math.ceil(q * len(sorted_ns))) - 1] / 1e6


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (from /proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class FanoutClient:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.reactor = Reactor()
        self.sio = cfg.variant == "socketio"
        self.offset = SIO_OFFSET if self.sio else 0
        total = sum(p.warmup + p.broadcasts for p in cfg.phases)
        self.pub_ns = [0] * total
        self.counts = [0] * total
        self.sink: list[list[int] | None] = [None] * total
        self.seq = 0
        self.expected = 0
        self.wait_seq = -1
        self.receivers: list[WSConn] = []
        self.lost = 0
        self.duplicates = 0
        self.publisher: WSConn | None = None
        self.stalled: Stalled | None = None

    # frame handlers (the hot path) ----------------------------------------------------------

    def _deliver(self, conn: WSConn, seq: int, now: int) -> None:
        last = conn.last_seq
        if seq == last:
            self.duplicates += 1
            return
        if seq < last:
            conn.misordered += 1
        conn.last_seq = seq
        self.counts[seq] += 1
        sink = self.sink[seq]
        if sink is not None:
            sink.append(now - self.pub_ns[seq])

    def on_frame(self, conn: WSConn, data: bytes, start: int, end: int, now: int) -> None:
        self._deliver(conn, int(data[start : start + 7]), now)

    def on_sio_frame(self, conn: WSConn, data: bytes, start: int, end: int, now: int) -> None:
        first = data[start]
        if first == _C4:
            second = data[start + 1]
            if second == _C2:
                self._deliver(conn, int(data[start + SIO_OFFSET : start + SIO_OFFSET + 7]), now)
            elif second == _C0:  # CONNECT accepted
                conn.ready = True
        elif first == _C2:  # Engine.IO ping
            conn.send_text(b"3")
        elif first == _C0:  # Engine.IO open: join the default namespace
            conn.send_text(b'40{"pub":1}' if conn.tag == "publisher" else b"40")

    def on_stalled_frame(self, conn: WSConn, data: bytes, start: int, end: int, now: int) -> None:
        if self.sio and data[start : start + 2] != b"42":
            self.on_sio_frame(conn, data, start, end, now)
            return
        stalled = self.stalled
        assert stalled is not None
        seq = int(data[start + self.offset : start + self.offset + 7])
        stalled.seq_last = seq
        stalled.seen.add(seq)

    def on_receiver_lost(self, conn: WSConn) -> None:
        self.lost += 1
        self.expected -= 1

    # connections ---------------------------------------------------------------------------

    def _open_many(self, port: int, role: str, n: int, rcvbuf: int | None = None) -> list[WSConn]:
        if self.sio:
            path = SIO_PATH
            handler = self.on_stalled_frame if role == "stalled" else self.on_sio_frame
        else:
            path = "/pub" if role == "publisher" else "/ws"
            handler = self.on_stalled_frame if role == "stalled" else self.on_frame
        conns = [self.reactor.open(port, path, handler, tag=role, rcvbuf=rcvbuf) for _ in range(n)]
        # socket.io: wait for the CONNECT reply ("40{...}"), i.e. the room is joined
        if not self.reactor.run_until(
            lambda: (
                all(c.ready if self.sio else c.opened for c in conns)
                or any(c.closed for c in conns)
            ),
            20.0,
        ):
            raise RuntimeError(f"{role}: handshake timed out")
        for c in conns:
            if c.closed:
                raise RuntimeError(f"{role}: connection failed: {c.error}")
        return conns

    def connect_all(self) -> float:
        t0 = time.perf_counter()
        for i in range(0, self.cfg.receivers, self.cfg.batch):
            n = min(self.cfg.batch, self.cfg.receivers - i)
            batch = self._open_many(self.cfg.port, "receiver", n)
            for conn in batch:
                conn.on_lost = self.on_receiver_lost
            self.receivers.extend(batch)
        self.expected = len(self.receivers)
        self.publisher = self._open_many(self.cfg.port, "publisher", 1)[0]
        return time.perf_counter() - t0

    def connect_stalled(self) -> None:
        port = self.cfg.stall_port or self.cfg.port
        conn = self._open_many(port, "stalled", 1, rcvbuf=self.cfg.stalled_rcvbuf)[0]
        self.stalled = Stalled(conn)
        self.reactor.pause(conn)
        # let the server register it before the first broadcast
        self.reactor.run_until(lambda: False, 0.2)

    # the closed loop -----------------------------------------------------------------------

    def broadcast(self, payload_size: int) -> bool:
        seq = self.seq
        self.seq += 1
        self.wait_seq = seq
        now = time.perf_counter_ns()
        body = b"%07d %019d " % (seq, now)
        body += b"x" * (payload_size - len(body))
        self.pub_ns[seq] = now
        assert self.publisher is not None
        if self.sio:
            self.publisher.send_text(b'42["pub","' + body + b'"]')
        else:
            self.publisher.send_text(body)
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
        if spec.stalled:
            self.connect_stalled()
        error = self.warm_up(spec, out)
        if error:
            out["error"] = error
            out["server"] = self.server_stats()
            return out
        first = self.seq
        latencies: list[int] = []
        for s in range(first, first + spec.broadcasts):
            self.sink[s] = latencies
        healthy = self.expected
        pid = self.cfg.server_pid
        cpu0, srv0, all0 = time.process_time(), process_cpu_s(pid), machine_busy_s()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        polls0, events0 = self.reactor.polls, self.reactor.events
        t0 = t_done = time.perf_counter()
        completed = 0
        for _ in range(spec.broadcasts):
            if not self.broadcast(spec.payload):
                out["stalled_after"] = completed
                out["stalled_got"] = self.counts[self.seq - 1]
                break
            completed += 1
            t_done = time.perf_counter()
            if t_done - t0 > self.cfg.phase_limit:
                out["time_limit_after"] = completed
                break
        cpu_elapsed = time.perf_counter() - t0
        cpu1, srv1, all1 = time.process_time(), process_cpu_s(pid), machine_busy_s()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        elapsed = t_done - t0
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
            client_cpu=(cpu1 - cpu0) / cpu_elapsed,
            client_sys=(ru1.ru_stime - ru0.ru_stime) / cpu_elapsed,
            server_cpu=(srv1 - srv0) / cpu_elapsed,
            other_cpu=((all1 - all0) - (cpu1 - cpu0) - (srv1 - srv0)) / cpu_elapsed,
            receivers_lost=self.lost,
            events_per_poll=(self.reactor.events - events0) / max(1, self.reactor.polls - polls0),
            duplicates=self.duplicates,
            misordered=sum(r.misordered for r in self.receivers),
        )
        out["server"] = self.server_stats()
        if spec.stalled:
            out["stalled_peer"] = self.stalled_fate(first)
        return out

    def warm_up(self, spec: PhaseSpec, out: dict[str, Any]) -> str | None:
        """Unmeasured broadcasts; an error message if one of them timed out."""
        for done in range(spec.warmup):
            if not self.broadcast(spec.payload):
                got = self.counts[self.seq - 1]
                return f"warm-up broadcast {done} timed out ({got}/{self.expected} got it)"
        out["warmup"] = spec.warmup
        return None

    def stalled_fate(self, first: int) -> dict[str, Any]:
        """Resume reading on the stalled peer: what had it been sent, and how did it end?"""
        stalled = self.stalled
        assert stalled is not None
        conn = stalled.conn
        self.reactor.resume(conn)
        last_sent = self.seq - 1
        self.reactor.run_until(lambda: conn.closed or stalled.seq_last >= last_sent, 3.0)
        got = sum(1 for s in stalled.seen if s >= first)
        return {
            "received_measured": got,
            "sent_measured": last_sent - first + 1,
            "close_code": conn.close_code,
            "connection_closed": conn.closed,
            "error": conn.error,
        }


def main() -> None:
    raise_nofile_limit()
    cfg = Config.from_json(sys.argv[1])
    bench = FanoutClient(cfg)
    result: dict[str, Any] = {"variant": cfg.variant, "phases": {}}
    result["connect_s"] = bench.connect_all()
    for spec in cfg.phases:
        result["phases"][spec.name] = bench.run_phase(spec)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip closing a thousand sockets one by one


if __name__ == "__main__":
    main()
