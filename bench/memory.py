"""Idle-connection memory: server RSS per open WebSocket, bare Starlette vs asgi_rt.

    python -m bench.memory            # 2000 connections, 2 rounds, ~1 minute
    python -m bench.memory --quick    # 500 connections, 1 round

For each uvicorn WebSocket implementation (``websockets-sansio``, the default, first;
then the legacy ``websockets``) and each app (``bare``: accept, then ``receive()`` in a
loop; ``asgi_rt``: ``async with manager.connect(ws) as conn: async for _ in conn``), a
fresh server process (``bench.fanout_server``) and one client process:

1. the client opens and closes ``--warm`` connections (imports, caches, code paths);
2. the server runs ``gc.collect()``, settles, and its VmRSS is read from /proc;
3. the client opens N idle connections; once the server has registered all of them,
   ``gc.collect()`` again, settle, and VmRSS again.

KiB per connection = (after - before) / N. Both processes raise their open-files limit.

Every connection sends one short JSON message and gets one broadcast (so a compressor and a
decompressor exist where they were negotiated); then ``--blast`` broadcasts measure the
server's CPU per delivered message. ``--modes``: ``plain`` clients offer no extension;
``browser`` clients offer ``permessage-deflate; client_max_window_bits`` as Chrome and
Firefox do, against uvicorn's default (deflate accepted); ``browser-off`` the same clients
against ``uvicorn --ws-per-message-deflate false`` (the server declines the offer, the
browser carries on uncompressed).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import time
import zlib
from typing import Any

from ._proc import ROOT, Server
from ._report import print_targets, write_json
from ._wsclient import OP_CLOSE, OP_TEXT, Reactor, WSConn, http_get_json, raise_nofile_limit

APPS = ("bare", "asgi_rt")
# clients' offer, BENCH_WS_DEFLATE for the server
MODES: dict[str, tuple[str | None, str]] = {
    "plain": (None, "1"),  # clients that offer no extension (the old figure)
    "browser": ("permessage-deflate; client_max_window_bits", "1"),  # uvicorn's default
    # the same clients against --ws-per-message-deflate false
    "browser-off": ("permessage-deflate; client_max_window_bits", "0"),
}
WS_IMPLS = ("websockets-sansio", "websockets")
TARGET_KIB = 36.0


# client process -------------------------------------------------------------------------------

MESSAGE = json.dumps(
    {"type": "room", "room": "lobby", "seq": 1, "epoch": "e1", "data": {"text": "hello " * 12}}
).encode()


def deflate_frame(payload: bytes) -> tuple[int, bytes]:
    """``(opcode with RSV1, payload)`` compressed as permessage-deflate (RFC 7692 7.2.1).

    A fresh 512-byte window per message: any server window setting can inflate it.
    """
    compressor = zlib.compressobj(wbits=-9)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return OP_TEXT | 0x40, data[:-4]


class Client:
    """N idle receivers that each send one message and get one; a ``/pub`` connection."""

    def __init__(self, port: int, mode: str) -> None:
        self.port = port
        self.offer, deflate = MODES[mode]
        self.compress = self.offer is not None and deflate == "1"  # the server accepts it
        self.reactor = Reactor()
        self.pub: WSConn | None = None

    def open_all(self, count: int) -> list[WSConn]:
        reactor = self.reactor
        conns: list[WSConn] = []
        for i in range(0, count, 100):
            batch = [
                reactor.open(self.port, "/ws", None, extensions=self.offer)
                for _ in range(min(100, count - i))
            ]
            reactor.wait_ready(batch, "receivers", timeout=30)
            conns += batch
        return conns

    def exchange(self, conns: list[WSConn], count: int) -> None:
        """Each of ``conns`` sends one message; then ``count`` broadcasts reach them all."""
        opcode, payload = deflate_frame(MESSAGE) if self.compress else (OP_TEXT, MESSAGE)
        for conn in conns:
            conn.write_frame(opcode, payload)
        if self.pub is None:
            self.pub = self.reactor.open(self.port, "/pub", None)
            self.reactor.wait_ready([self.pub], "publisher")
        want = [conn.frames + count for conn in conns]
        for _ in range(count):
            self.pub.send_text(MESSAGE)
        if not self.reactor.run_until(
            lambda: all(c.frames >= w for c, w in zip(conns, want, strict=True)), 120
        ):
            raise SystemExit("broadcasts did not arrive")


def client_main(port: int, n: int, warm: int, mode: str) -> None:
    """Warm up, then on "open" hold ``n`` connections; on "blast K" broadcast K messages."""
    raise_nofile_limit()
    client = Client(port, mode)
    warmed = client.open_all(warm)
    client.exchange(warmed, 1)
    for conn in warmed:
        conn.write_frame(OP_CLOSE, (1000).to_bytes(2, "big"))
        client.reactor.close(conn)
    print("warm", flush=True)
    conns: list[WSConn] = []
    while True:  # keep answering pings while waiting for the orchestrator
        client.reactor.poll(0.05)
        if select.select([sys.stdin], [], [], 0)[0]:
            command = sys.stdin.readline().split()
            if command == ["open"]:
                conns = client.open_all(n)
                client.exchange(conns, 1)
                print(f"open {len(conns)}", flush=True)
            elif command[:1] == ["blast"]:
                client.exchange(conns, int(command[1]))
                print("blasted", flush=True)
            else:
                return


# orchestrator -----------------------------------------------------------------------------------


def wait_registered(port: int, n: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    count = -1
    while time.monotonic() < deadline:
        count = int(http_get_json(port, "/stats")["connections"])
        if count == n:
            return count
        time.sleep(0.1)
    raise RuntimeError(f"server registered {count} connections, expected {n}")


def settled_rss(server: Server, settle: float) -> int:
    http_get_json(server.port, "/stats?gc=1")
    time.sleep(settle)
    http_get_json(server.port, "/stats?gc=1")
    return server.rss_kib()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used, from /proc (10 ms resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _command(client: subprocess.Popen[str], command: str, expect: str) -> None:
    assert client.stdin is not None
    assert client.stdout is not None
    client.stdin.write(command + "\n")
    client.stdin.flush()
    line = client.stdout.readline().strip()
    if line != expect:
        raise RuntimeError(f"client failed at {command!r}: {line!r}")


def _stop(client: subprocess.Popen[str]) -> None:
    if client.poll() is None and client.stdin is not None:
        client.stdin.write("quit\n")
        client.stdin.close()
        try:
            client.wait(15)
        except subprocess.TimeoutExpired:
            client.kill()
            client.wait()


def measure(app: str, ws: str, mode: str, cfg: argparse.Namespace, rnd: int) -> dict[str, Any]:
    deflate = MODES[mode][1]
    n = cfg.n
    result: dict[str, Any] = {"app": app, "ws": ws, "mode": mode, "round": rnd, "connections": n}
    tag = f"memory-{ws}-{mode}-{app}-r{rnd}"
    with Server(app, ws, tag=tag, env={"BENCH_WS_DEFLATE": deflate}) as server:
        argv = [sys.executable, "-m", "bench.memory", "--client-port", str(server.port)]
        argv += ["--connections", str(n), "--warm", str(cfg.warm), "--mode", mode]
        pipe = subprocess.PIPE
        client = subprocess.Popen(argv, cwd=ROOT, stdin=pipe, stdout=pipe, text=True)
        assert client.stdout is not None
        try:
            if client.stdout.readline().strip() != "warm":
                raise RuntimeError("client failed during warm-up")
            wait_registered(server.port, 0)
            before = settled_rss(server, cfg.settle)
            _command(client, "open", f"open {n}")
            wait_registered(server.port, n)
            after = settled_rss(server, cfg.settle)
            cpu = cpu_seconds(server.pid)
            _command(client, f"blast {cfg.blast}", "blasted")
            cpu = cpu_seconds(server.pid) - cpu
        finally:
            _stop(client)
        result.update(
            rss_before_kib=before,
            rss_after_kib=after,
            kib_per_connection=(after - before) / n,
            cpu_us_per_message=cpu * 1e6 / (n * cfg.blast),
        )
    result["server_problems"] = server.problems()[:10]
    return result


def summarize(runs: list[dict[str, Any]], ws: str, mode: str) -> dict[str, Any]:
    """Median per app over rounds, with ratios to ``bare`` in the same mode; prints the rows."""
    summary: dict[str, Any] = {}
    for app in APPS:
        mine = [r for r in runs if (r["ws"], r["mode"], r["app"]) == (ws, mode, app)]
        ok = [r for r in mine if "error" not in r]
        if not ok:
            summary[app] = {"error": "; ".join(r.get("error", "") for r in mine)}
            print(f"{ws:<18}{mode:<13}{app:<9}  FAILED: {summary[app]['error'][:200]}")
            continue
        keys = ("rss_before_kib", "rss_after_kib", "kib_per_connection", "cpu_us_per_message")
        summary[app] = {key: statistics.median(r[key] for r in ok) for key in keys}
    bare = summary.get("bare", {}).get("kib_per_connection")
    for app in APPS:
        row = summary[app]
        if "error" in row:
            continue
        row["ratio_vs_bare"] = vs = row["kib_per_connection"] / bare if bare else float("nan")
        print(
            f"{ws:<18}{mode:<13}{app:<9}{row['rss_before_kib'] / 1024:>9.1f}"
            f"{row['rss_after_kib'] / 1024:>9.1f}{row['kib_per_connection']:>10.1f}{vs:>8.2f}"
            f"{row['cpu_us_per_message']:>11.1f}"
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="500 connections, 1 round")
    p.add_argument("--connections", type=int)
    p.add_argument("--rounds", type=int)
    p.add_argument("--warm", type=int, default=50)
    p.add_argument("--blast", type=int, default=20, help="broadcasts timed for CPU per message")
    p.add_argument("--settle", type=float, default=1.0, help="seconds between gc and RSS read")
    p.add_argument("--ws", default=",".join(WS_IMPLS))
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES))
    p.add_argument("--mode", default="plain", help=argparse.SUPPRESS)
    p.add_argument("--client-port", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.n = a.connections or (500 if a.quick else 2000)
    if a.client_port:
        client_main(a.client_port, a.n, a.warm, a.mode)
        return 0
    raise_nofile_limit()
    rounds = a.rounds or (1 if a.quick else 2)
    ws_impls = [w for w in a.ws.split(",") if w]
    modes = [m for m in a.modes.split(",") if m]
    t0 = time.perf_counter()
    runs: list[dict[str, Any]] = []
    for ws in ws_impls:
        for rnd in range(1, rounds + 1):
            for mode in modes:
                for app in APPS:
                    try:
                        run = measure(app, ws, mode, a, rnd)
                    except RuntimeError as exc:
                        run = {"app": app, "ws": ws, "mode": mode, "round": rnd, "error": str(exc)}
                    runs.append(run)
                    kib = run.get("kib_per_connection")
                    status = run.get("error") or f"{kib:.1f} KiB/connection"
                    line = f"{ws:<18} r{rnd} {mode:<12} {app:<8} {status}"
                    print(line, file=sys.stderr, flush=True)

    print(f"\nIdle connections: {a.n} per run, one ~110 B message each way; server VmRSS")
    print(f"delta, server CPU per delivered message over {a.blast} broadcasts; median of {rounds}")
    print(
        "{:<18}{:<13}{:<9}{:>9}{:>9}{:>10}{:>8}{:>11}".format(
            *("uvicorn --ws", "clients", "app", "bef MiB", "aft MiB"),
            *("KiB/conn", "vs bare", "CPU us/msg"),
        )
    )
    summary: dict[str, Any] = {}
    checks = []
    for ws in ws_impls:
        for mode in modes:
            summary[f"{ws}/{mode}"] = rows = summarize(runs, ws, mode)
            value = rows.get("asgi_rt", {}).get("kib_per_connection")
            if value is not None:
                verdict = "PASS" if value <= TARGET_KIB else "FAIL"
                checks.append(
                    f"{verdict}  [{ws}, {mode}] asgi_rt KiB/connection: {value:.1f} "
                    f"(target <= {TARGET_KIB:g})"
                )
    print_targets(checks, [])
    problems = sorted(
        {f"[{r['ws']}] {r['app']}: {line}" for r in runs for line in r.get("server_problems", [])}
    )
    if problems:
        print("\nServer log problems:")
        for line in problems[:10]:
            print("  " + line[:200])
    print(f"\n{len(runs)} runs in {time.perf_counter() - t0:.0f} s")
    write_json(
        "memory.json",
        {"connections": a.n, "rounds": rounds, "summary": summary, "targets": checks, "runs": runs},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
