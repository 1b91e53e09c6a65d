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
"""

from __future__ import annotations

import argparse
import select
import statistics
import subprocess
import sys
import time
from typing import Any

from ._proc import ROOT, Server
from ._report import print_targets, write_json
from ._wsclient import OP_CLOSE, Reactor, WSConn, http_get_json, raise_nofile_limit

APPS = ("bare", "asgi_rt")
WS_IMPLS = ("websockets-sansio", "websockets")
TARGET_KIB = 36.0


# client process -------------------------------------------------------------------------------


def client_main(port: int, n: int, warm: int) -> None:
    """Open ``warm`` connections and close them, then (on "open") ``n`` idle ones."""
    raise_nofile_limit()
    reactor = Reactor()

    def open_all(count: int) -> list[WSConn]:
        conns: list[WSConn] = []
        for i in range(0, count, 100):
            batch = [reactor.open(port, "/ws", None) for _ in range(min(100, count - i))]

            def settled(batch: list[WSConn] = batch) -> bool:
                return all(c.opened or c.closed for c in batch)

            if not reactor.run_until(settled, 30):
                raise SystemExit("handshakes timed out")
            failed = [c.error for c in batch if c.closed]
            if failed:
                raise SystemExit(f"{len(failed)} connections failed: {failed[0]}")
            conns += batch
        return conns

    for conn in open_all(warm):
        conn.write_frame(OP_CLOSE, (1000).to_bytes(2, "big"))
        reactor.close(conn)
    print("warm", flush=True)
    while True:  # keep answering pings while waiting for the orchestrator
        reactor.poll(0.05)
        if select.select([sys.stdin], [], [], 0)[0]:
            command = sys.stdin.readline().strip()
            if command == "open":
                conns = open_all(n)
                print(f"open {len(conns)}", flush=True)
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


def measure(app: str, ws: str, n: int, warm: int, settle: float, rnd: int) -> dict[str, Any]:
    result: dict[str, Any] = {"app": app, "ws": ws, "round": rnd, "connections": n}
    with Server(app, ws, tag=f"memory-{ws}-{app}-r{rnd}") as server:
        client = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.memory",
                "--client-port",
                str(server.port),
                "--connections",
                str(n),
                "--warm",
                str(warm),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdin is not None
        assert client.stdout is not None
        try:
            if client.stdout.readline().strip() != "warm":
                raise RuntimeError("client failed during warm-up")
            wait_registered(server.port, 0)
            before = settled_rss(server, settle)
            client.stdin.write("open\n")
            client.stdin.flush()
            line = client.stdout.readline().strip()
            if line != f"open {n}":
                raise RuntimeError(f"client failed to open {n} connections: {line!r}")
            wait_registered(server.port, n)
            after = settled_rss(server, settle)
        finally:
            if client.poll() is None:
                client.stdin.write("quit\n")
                client.stdin.close()
                try:
                    client.wait(15)
                except subprocess.TimeoutExpired:
                    client.kill()
                    client.wait()
        result.update(
            rss_before_kib=before,
            rss_after_kib=after,
            kib_per_connection=(after - before) / n,
        )
    result["server_problems"] = server.problems()[:10]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="500 connections, 1 round")
    p.add_argument("--connections", type=int)
    p.add_argument("--rounds", type=int)
    p.add_argument("--warm", type=int, default=50)
    p.add_argument("--settle", type=float, default=1.0, help="seconds between gc and RSS read")
    p.add_argument("--ws", default=",".join(WS_IMPLS))
    p.add_argument("--client-port", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    n = a.connections or (500 if a.quick else 2000)
    if a.client_port:
        client_main(a.client_port, n, a.warm)
        return 0
    raise_nofile_limit()
    rounds = a.rounds or (1 if a.quick else 2)
    ws_impls = [w for w in a.ws.split(",") if w]
    t0 = time.perf_counter()
    runs: list[dict[str, Any]] = []
    for ws in ws_impls:
        for rnd in range(1, rounds + 1):
            for app in APPS:
                try:
                    run = measure(app, ws, n, a.warm, a.settle, rnd)
                except RuntimeError as exc:
                    run = {"app": app, "ws": ws, "round": rnd, "error": str(exc)}
                runs.append(run)
                kib = run.get("kib_per_connection")
                status = run.get("error") or f"{kib:.1f} KiB/connection"
                print(f"{ws:<18} round {rnd} {app:<8} {status}", file=sys.stderr, flush=True)

    print(f"\nIdle connections: {n} per run, server RSS (VmRSS) delta, median of {rounds} round(s)")
    print(
        "{:<20}{:<10}{:>12}{:>12}{:>11}{:>10}".format(
            "uvicorn --ws", "app", "before MiB", "after MiB", "KiB/conn", "vs bare"
        )
    )
    summary: dict[str, dict[str, Any]] = {}
    checks = []
    for ws in ws_impls:
        summary[ws] = {}
        for app in APPS:
            ok = [r for r in runs if r["ws"] == ws and r["app"] == app and "error" not in r]
            if not ok:
                errors = [r.get("error", "") for r in runs if r["ws"] == ws and r["app"] == app]
                summary[ws][app] = {"error": "; ".join(errors)}
                print(f"{ws:<20}{app:<10}  FAILED: {summary[ws][app]['error'][:200]}")
                continue
            summary[ws][app] = {
                key: statistics.median(r[key] for r in ok)
                for key in ("rss_before_kib", "rss_after_kib", "kib_per_connection")
            }
        bare = summary[ws].get("bare", {}).get("kib_per_connection")
        for app in APPS:
            row = summary[ws][app]
            if "error" in row:
                continue
            vs = row["kib_per_connection"] / bare if bare else float("nan")
            row["ratio_vs_bare"] = vs
            print(
                f"{ws:<20}{app:<10}{row['rss_before_kib'] / 1024:>12.1f}"
                f"{row['rss_after_kib'] / 1024:>12.1f}{row['kib_per_connection']:>11.1f}{vs:>10.2f}"
            )
        arow = summary[ws].get("asgi_rt", {})
        if "kib_per_connection" in arow:
            value = arow["kib_per_connection"]
            verdict = "PASS" if value <= TARGET_KIB else "FAIL"
            checks.append(
                f"{verdict}  [{ws}] asgi_rt KiB/connection: {value:.1f} "
                f"(target <= {TARGET_KIB:g}; bare {bare:.1f})"
            )
    print_targets(checks, [])
    problems = sorted(
        {f"[{r['ws']}] {r['app']}: {line}" for r in runs for line in r.get("server_problems", [])}
    )
    if problems:
        print("\nServer log problems:")
        for line in problems[:10]:
            print("  " + line[:200])
    elapsed = time.perf_counter() - t0
    print(f"\n{len(runs)} runs in {elapsed:.0f} s")
    write_json(
        "memory.json",
        {
            "connections": n,
            "rounds": rounds,
            "summary": summary,
            "targets": checks,
            "runs": runs,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
