"""The fan-out client process: N receivers, one publisher, a closed loop of broadcasts.

Run by ``bench.fanout`` as ``python -m bench._fanout_client '<json config>'``; prints one
JSON line with the results. The publisher and the receivers live in this process, so
a delivery's latency is simply its receive time minus the publish time (both
``time.perf_counter_ns``).

Broadcasts carry a global sequence number (``%07d``), the publish timestamp and padding
up to the payload size. The publisher sends broadcast ``i`` and waits until every healthy
receiver has it (or ``broadcast_timeout``), then sends ``i + 1``. A timeout ends the phase:
the publisher (or the server's fan-out) is reported as stalled at that broadcast.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ._wsclient import WSClient, http_get, open_ws, raise_nofile_limit

SIO_OFFSET = len(b'42["msg","')  # where the payload starts in a socket.io event frame
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
    batch: int = 50

    @classmethod
    def from_json(cls, text: str) -> Config:
        raw = json.loads(text)
        raw["phases"] = [PhaseSpec(**p) for p in raw["phases"]]
        return cls(**raw)


@dataclass
class Stalled:
    client: WSClient
    frames_paused: int = 0
    seq_first: int = -1
    seq_last: int = -1
    seen: set[int] = field(default_factory=set)


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile of ns values, in ms."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1] / 1e6


def server_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class FanoutClient:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.sio = cfg.variant == "socketio"
        self.offset = SIO_OFFSET if self.sio else 0
        total = sum(p.warmup + p.broadcasts for p in cfg.phases)
        self.pub_ns = [0] * total
        self.counts = [0] * total
        self.sink: list[list[int] | None] = [None] * total
        self.seq = 0
        self.expected = 0
        self.wait_seq = -1
        self.waiter: asyncio.Future[None] | None = None
        self.receivers: list[WSClient] = []
        self.lost = 0
        self.duplicates = 0
        self.publisher: WSClient | None = None
        self.stalled: Stalled | None = None

    # frame handlers (hot path) --------------------------------------------------------------

    def _deliver(self, client: WSClient, seq: int, now: int) -> None:
        last = client.last_seq
        if seq == last:
            self.duplicates += 1
            return
        if seq < last:
            client.misordered += 1
        client.last_seq = seq
        count = self.counts[seq] + 1
        self.counts[seq] = count
        sink = self.sink[seq]
        if sink is not None:
            sink.append(now - self.pub_ns[seq])
        if count >= self.expected and seq == self.wait_seq:
            waiter = self.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def on_frame(self, client: WSClient, data: bytes, start: int, end: int, now: int) -> None:
        self._deliver(client, int(data[start : start + 7]), now)

    def on_sio_frame(self, client: WSClient, data: bytes, start: int, end: int, now: int) -> None:
        first = data[start]
        if first == _C4:
            second = data[start + 1]
            if second == _C2:
                self._deliver(client, int(data[start + SIO_OFFSET : start + SIO_OFFSET + 7]), now)
            elif second == _C0 and not client.ready.done():
                client.ready.set_result(None)
        elif first == _C2:  # Engine.IO ping
            client.send_text(b"3")
        elif first == _C0:  # Engine.IO open: join the default namespace
            client.send_text(b'40{"pub":1}' if client.tag == "publisher" else b"40")

    def on_stalled_frame(self, client: WSClient, data: bytes, start: int, end: int, now: int) -> None:
        if self.sio:
            if data[start] == _C2:
                client.send_text(b"3")
                return
            if data[start : start + 2] != b"42":
                self.on_sio_frame(client, data, start, end, now)
                return
        stalled = self.stalled
        assert stalled is not None
        seq = int(data[start + self.offset : start + self.offset + 7])
        if stalled.seq_first < 0:
            stalled.seq_first = seq
        stalled.seq_last = seq
        stalled.seen.add(seq)

    def on_receiver_lost(self, client: WSClient) -> None:
        self.lost += 1
        self.expected -= 1
        if self.wait_seq >= 0 and self.counts[self.wait_seq] >= self.expected:
            waiter = self.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    # connections ---------------------------------------------------------------------------

    async def _open(self, port: int, role: str, rcvbuf: int | None = None) -> WSClient:
        if self.sio:
            path = "/socket.io/?EIO=4&transport=websocket"
            handler = self.on_stalled_frame if role == "stalled" else self.on_sio_frame
        else:
            path = "/pub" if role == "publisher" else "/ws"
            handler = self.on_stalled_frame if role == "stalled" else self.on_frame
        client = await open_ws(port, path, handler, rcvbuf=rcvbuf, tag=role)
        if role == "publisher":
            self.publisher = client
        if self.sio:  # wait for the socket.io CONNECT reply ("40{...}")
            async with asyncio.timeout(20):
                await client.ready
        return client

    async def connect_all(self) -> float:
        t0 = time.perf_counter()
        for i in range(0, self.cfg.receivers, self.cfg.batch):
            n = min(self.cfg.batch, self.cfg.receivers - i)
            batch = await asyncio.gather(*(self._open(self.cfg.port, "receiver") for _ in range(n)))
            for client in batch:
                client.on_lost = self.on_receiver_lost
            self.receivers.extend(batch)
        self.expected = len(self.receivers)
        await self._open(self.cfg.port, "publisher")
        return time.perf_counter() - t0

    async def connect_stalled(self) -> None:
        port = self.cfg.stall_port or self.cfg.port
        client = await self._open(port, "stalled", rcvbuf=self.cfg.stalled_rcvbuf)
        self.stalled = Stalled(client)
        client.pause_reading()
        await asyncio.sleep(0.2)  # let the server register it before the first broadcast

    # the closed loop -----------------------------------------------------------------------

    async def broadcast(self, payload_size: int) -> bool:
        seq = self.seq
        self.seq += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiter = fut
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
        try:
            async with asyncio.timeout(self.cfg.broadcast_timeout):
                await fut
        except TimeoutError:
            return False
        return True

    async def stats(self) -> dict[str, Any]:
        try:
            result: dict[str, Any] = json.loads(await http_get(self.cfg.port, "/stats"))
        except (OSError, TimeoutError, ValueError) as exc:
            return {"error": repr(exc)}
        return result

    async def run_phase(self, spec: PhaseSpec) -> dict[str, Any]:
        out: dict[str, Any] = {"payload": spec.payload, "broadcasts_planned": spec.broadcasts}
        if spec.stalled:
            await self.connect_stalled()
        for _ in range(spec.warmup):
            if not await self.broadcast(spec.payload):
                out["error"] = f"warm-up broadcast timed out ({self.counts[self.seq - 1]} got it)"
                out["server"] = await self.stats()
                return out
        first = self.seq
        latencies: list[int] = []
        for s in range(first, first + spec.broadcasts):
            self.sink[s] = latencies
        healthy = self.expected
        cpu0, srv0 = time.process_time(), server_cpu_s(self.cfg.server_pid)
        t0 = t_done = time.perf_counter()
        completed = 0
        for _ in range(spec.broadcasts):
            if not await self.broadcast(spec.payload):
                seq = self.seq - 1
                out["stalled_at"] = completed
                out["stalled_got"] = self.counts[seq]
                break
            completed += 1
            t_done = time.perf_counter()
            if t_done - t0 > self.cfg.phase_limit:
                out["time_limit"] = completed
                break
        elapsed = t_done - t0
        delivered = sum(self.counts[first : first + spec.broadcasts])
        cpu1, srv1 = time.process_time(), server_cpu_s(self.cfg.server_pid)
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
            client_cpu=(cpu1 - cpu0) / elapsed if elapsed > 0 else 0.0,
            server_cpu=(srv1 - srv0) / elapsed if elapsed > 0 else 0.0,
            receivers_lost=self.lost,
            duplicates=self.duplicates,
            misordered=sum(r.misordered for r in self.receivers),
        )
        out["server"] = await self.stats()
        if spec.stalled:
            out["stalled_peer"] = await self.stalled_fate(first)
        return out

    async def stalled_fate(self, first: int) -> dict[str, Any]:
        """Resume reading on the stalled peer and see what it had been sent, and how it ended."""
        stalled = self.stalled
        assert stalled is not None
        client = stalled.client
        before = len(stalled.seen)
        client.resume_reading()
        last_sent = self.seq - 1
        deadline = time.perf_counter() + 3.0
        while time.perf_counter() < deadline and not client.closed.done():
            if stalled.seq_last >= last_sent:
                break
            await asyncio.sleep(0.05)
        got = sorted(s for s in stalled.seen if s >= first)
        return {
            "received_before_resume": before,
            "received_measured": len(got),
            "sent_measured": last_sent - first + 1,
            "last_seq_received": stalled.seq_last - first if stalled.seq_last >= 0 else None,
            "close_code": client.close_code,
            "connection_closed": client.closed.done(),
        }


async def amain(cfg: Config) -> dict[str, Any]:
    bench = FanoutClient(cfg)
    result: dict[str, Any] = {"variant": cfg.variant, "phases": {}}
    result["connect_s"] = await bench.connect_all()
    for spec in cfg.phases:
        result["phases"][spec.name] = await bench.run_phase(spec)
    return result


def main() -> None:
    raise_nofile_limit()
    cfg = Config.from_json(sys.argv[1])
    result = asyncio.run(amain(cfg))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip closing a thousand transports one by one


if __name__ == "__main__":
    main()
