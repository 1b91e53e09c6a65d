"""The rooms client process: receivers split over two workers, one publisher, closed/paced loop.

Run by ``bench.rooms`` as ``python -m bench._rooms_client '<json config>'``; prints one
JSON line with the results. Receivers ``0 .. n/2-1`` (group ``A``) connect to worker A,
the others (group ``B``) to worker B; the publisher connects to worker A, so for A's
receivers the publication is local and for B's it crosses the backplane. In the
single-process variant both ports are the same and both groups are local.

Each broadcast carries a bench sequence number (``%07d``), the publish timestamp and
padding up to the payload size. The publisher sends broadcast ``i``, waits until every
receiver has it (or ``broadcast_timeout``), then sends ``i + 1``; a timeout in the
measured part ends it (reported as stalled). Latency is receive time minus publish
time on this process's clock (``time.perf_counter_ns``).

Checks per delivery: the bench seq per connection (duplicate, out of order, gap), and for
asgi_rt frames ``{"room":"r","seq":N,"data":"..."}`` that the room's ``seq`` is the bench
seq plus one (the room is fresh, Redis is flushed before each session, and nothing else
publishes to it), i.e. that ``seq`` agrees on every worker and counts every publication.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

from ._broadcast_client import message
from ._fanout_client import SIO_PATH, send_broadcast, sio_handler
from ._meter import machine_busy_s, process_cpu_s
from ._stats import percentile
from ._wsclient import Reactor, WSConn, http_get_json, raise_nofile_limit

ROOM_PREFIX = b'{"room":"r","seq":'
_RP = len(ROOM_PREFIX)
_DATA = len(b',"data":"')
_BRACE, _R = ord("{"), ord("r")


@dataclass
class Config:
    variant: str
    port_a: int
    port_b: int
    server_pids: list[int]
    redis_pid: int | None
    receivers: int
    broadcasts: int
    warmup: int
    payload: int
    broadcast_timeout: float = 5.0
    settle: float = 0.5
    batch: int = 50
    rate: float = 0.0  # > 0: paced (open loop), broadcasts/s; 0: closed loop


class RoomsClient:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.reactor = Reactor()
        self.sio = cfg.variant.startswith("socketio")
        total = cfg.warmup + cfg.broadcasts
        self.pub_ns = [0] * total
        self.counts = [0] * total
        self.measured = [False] * total
        self.lat: dict[str, list[int]] = {"A": [], "B": []}
        self.seq = 0
        self.expected = 0
        self.receivers: list[WSConn] = []
        self.publisher: WSConn | None = None
        self.lost = 0
        self.duplicates = 0
        self.room_seq_mismatch = 0
        self.room_seq_offsets: set[int] = set()
        self.unexpected: list[str] = []
        self.on_sio_frame = sio_handler(self._deliver)

    # frame handlers (the hot path) ----------------------------------------------------------

    def _deliver(self, conn: WSConn, seq: int, now: int) -> None:
        if not conn.track(seq):
            self.duplicates += 1
            return
        self.counts[seq] += 1
        if self.measured[seq]:
            self.lat[conn.tag].append(now - self.pub_ns[seq])

    def on_frame(self, conn: WSConn, data: bytes, start: int, end: int, now: int) -> None:
        if data[start] != _BRACE:  # handrolled_redis: the published text as is
            self._deliver(conn, int(data[start : start + 7]), now)
        elif data[start + 2] == _R:  # {"room":"r","seq":N,"epoch":E,"data":"<bench seq> ..."}
            comma = data.find(b",", start + _RP, end)
            room_seq = int(data[start + _RP : comma])
            at = data.find(b'"data":"', comma, end) + _DATA - 1  # after "epoch", if any
            seq = int(data[at : at + 7])
            if room_seq != seq + 1:
                self.room_seq_mismatch += 1
                self.room_seq_offsets.add(room_seq - seq)
            self._deliver(conn, seq, now)
        elif data[start : start + 17] == b'{"type":"joined"}':
            conn.ready = True
        elif len(self.unexpected) < 10:
            self.unexpected.append(data[start:end][:200].decode(errors="replace"))

    def on_receiver_lost(self, conn: WSConn) -> None:
        self.lost += 1
        self.expected -= 1

    # connections ---------------------------------------------------------------------------

    def _open_many(self, port: int, tag: str, n: int) -> list[WSConn]:
        if self.sio:
            path, handler = SIO_PATH, self.on_sio_frame
        else:
            path, handler = ("/pub" if tag == "publisher" else "/ws"), self.on_frame
        conns = [self.reactor.open(port, path, handler, tag=tag) for _ in range(n)]
        # receivers: wait until they are room members ("joined" / socket.io CONNECT reply)
        return self.reactor.wait_ready(
            conns,
            f"{tag} on port {port}",
            joined=self.sio or tag != "publisher",
            timed_out="handshake/join timed out",
        )

    def connect_all(self) -> float:
        t0 = time.perf_counter()
        half = self.cfg.receivers // 2
        for group, port, n in (
            ("A", self.cfg.port_a, half),
            ("B", self.cfg.port_b, self.cfg.receivers - half),
        ):
            for i in range(0, n, self.cfg.batch):
                batch = self._open_many(port, group, min(self.cfg.batch, n - i))
                for conn in batch:
                    conn.on_lost = self.on_receiver_lost
                self.receivers.extend(batch)
        self.expected = len(self.receivers)
        self.publisher = self._open_many(self.cfg.port_a, "publisher", 1)[0]
        elapsed = time.perf_counter() - t0
        # let every worker's backplane subscription settle before the first publication
        self.reactor.run_until(lambda: False, self.cfg.settle)
        return elapsed

    # the closed loop -----------------------------------------------------------------------

    def broadcast(self) -> bool:
        seq = self.seq
        self.seq += 1
        self.pub_ns[seq], body = message(seq, self.cfg.payload)
        send_broadcast(self.publisher, body, self.sio)
        counts = self.counts
        return self.reactor.run_until(
            lambda: counts[seq] >= self.expected, self.cfg.broadcast_timeout
        )

    def paced(self, n: int) -> int:
        """Send ``n`` broadcasts at ``cfg.rate``/s whatever the deliveries do (open loop).

        Broadcast ``k`` is due at ``t0 + k / rate``; its latency counts from that due time,
        not from when it was actually sent, so a server that holds the client up (or a
        client that falls behind) shows in the latency instead of being hidden by a later
        send (coordinated omission). Returns how many broadcasts were fully delivered
        within ``broadcast_timeout`` after the last one was due.
        """
        first, period_ns = self.seq, 1e9 / self.cfg.rate
        t0 = time.perf_counter_ns()
        for k in range(n):
            due = t0 + int(k * period_ns)
            wait = (due - time.perf_counter_ns()) / 1e9
            if wait > 0:
                self.reactor.run_until(lambda: False, wait)
            seq = self.seq
            self.seq += 1
            _, body = message(seq, self.cfg.payload)
            self.pub_ns[seq] = due
            send_broadcast(self.publisher, body, self.sio)
        counts, last = self.counts, first + n
        self.reactor.run_until(
            lambda: all(counts[s] >= self.expected for s in range(first, last)),
            self.cfg.broadcast_timeout,
        )
        return sum(1 for s in range(first, last) if counts[s] >= self.expected)

    def server_stats(self) -> list[dict[str, Any]]:
        out = []
        ports = [self.cfg.port_a]
        if self.cfg.port_b != self.cfg.port_a:
            ports.append(self.cfg.port_b)
        for port in ports:
            try:
                out.append(http_get_json(port, "/stats"))
            except (OSError, ValueError) as exc:
                out.append({"error": repr(exc)})
        return out

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        out: dict[str, Any] = {"variant": cfg.variant}
        out["connect_s"] = self.connect_all()
        warmup_timeouts = []
        for i in range(cfg.warmup):
            if not self.broadcast():
                warmup_timeouts.append(f"warm-up {i}: {self.counts[i]}/{self.expected}")
        out["warmup_timeouts"] = warmup_timeouts
        first = self.seq
        for s in range(first, first + cfg.broadcasts):
            self.measured[s] = True
        receivers = self.expected
        pids = cfg.server_pids
        cpu0, all0 = time.process_time(), machine_busy_s()
        srv0 = [process_cpu_s(p) for p in pids]
        red0 = process_cpu_s(cfg.redis_pid) if cfg.redis_pid else 0.0
        polls0, events0 = self.reactor.polls, self.reactor.events
        t0 = t_done = time.perf_counter()
        completed = 0
        if cfg.rate > 0:
            completed = self.paced(cfg.broadcasts)
            t_done = time.perf_counter()
            if completed < cfg.broadcasts:
                out["stalled_after"] = completed
        for _ in range(0 if cfg.rate > 0 else cfg.broadcasts):
            if not self.broadcast():
                out["stalled_after"] = completed
                out["stalled_got"] = self.counts[self.seq - 1]
                break
            completed += 1
            t_done = time.perf_counter()
        wall = time.perf_counter() - t0
        # stragglers of a stalled broadcast still count as delivered, not as lost
        self.reactor.run_until(lambda: False, 0.2 if completed < cfg.broadcasts else 0.0)
        cpu1, all1 = time.process_time(), machine_busy_s()
        srv1 = [process_cpu_s(p) for p in pids]
        red1 = process_cpu_s(cfg.redis_pid) if cfg.redis_pid else 0.0
        elapsed = t_done - t0
        delivered = sum(self.counts[first : first + cfg.broadcasts])
        expected = receivers * cfg.broadcasts
        lat_all = sorted(self.lat["A"] + self.lat["B"])
        lat_a, lat_b = sorted(self.lat["A"]), sorted(self.lat["B"])
        server_cpu = [(b - a) / wall for a, b in zip(srv0, srv1, strict=True)]
        client_cpu = (cpu1 - cpu0) / wall
        redis_cpu = (red1 - red0) / wall
        out.update(
            receivers=receivers,
            broadcasts_completed=completed,
            delivered=delivered,
            expected=expected,
            completeness=delivered / expected if expected else 0.0,
            elapsed_s=elapsed,
            rate=cfg.rate,
            msgs_per_s=delivered / elapsed if elapsed > 0 else 0.0,
            p50_ms=percentile(lat_all, 0.50),
            p99_ms=percentile(lat_all, 0.99),
            max_ms=lat_all[-1] / 1e6 if lat_all else math.nan,
            a_p50_ms=percentile(lat_a, 0.50),
            a_p99_ms=percentile(lat_a, 0.99),
            b_p50_ms=percentile(lat_b, 0.50),
            b_p99_ms=percentile(lat_b, 0.99),
            a_delivered=len(lat_a),
            b_delivered=len(lat_b),
            client_cpu=client_cpu,
            server_cpu=server_cpu,
            redis_cpu=redis_cpu,
            other_cpu=(all1 - all0) / wall - client_cpu - sum(server_cpu) - redis_cpu,
            server_us_per_msg=1e6
            * sum(b - a for a, b in zip(srv0, srv1, strict=True))
            / max(1, delivered),
            events_per_poll=(self.reactor.events - events0) / max(1, self.reactor.polls - polls0),
            receivers_lost=self.lost,
            duplicates=self.duplicates,
            misordered=sum(r.misordered for r in self.receivers),
            gaps=sum(r.gaps for r in self.receivers),
            room_seq_mismatch=self.room_seq_mismatch,
            room_seq_offsets=sorted(self.room_seq_offsets)[:10],
            unexpected_frames=self.unexpected,
            max_rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        )
        out["servers"] = self.server_stats()
        return out


def main() -> None:
    raise_nofile_limit()
    cfg = Config(**json.loads(sys.argv[1]))
    result = RoomsClient(cfg).run()
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip closing the sockets one by one


if __name__ == "__main__":
    main()
