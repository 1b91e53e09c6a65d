"""Fan-out benchmark: asgi_rt against the usual designs, on a real uvicorn.

    python -m bench.fanout            # full run, ~5-6 minutes on 2 cores
    python -m bench.fanout --quick    # smoke run, ~1 minute

For each uvicorn WebSocket implementation (``websockets-sansio``, uvicorn's default,
first; then the legacy ``websockets``), each round runs every variant once, A B C D, in
a fresh server process (``bench.fanout_server``) and a fresh client process
(``bench._fanout_client``: 1000 receivers and one publisher on raw sockets). Tables
report the median over rounds. In one session (one server, one set of connections):

1. ``healthy``: closed loop, 200 broadcasts of 100 bytes (after 10 warm-up broadcasts);
2. ``baseline``: 200 broadcasts of 1000 bytes (after 10 warm-up), no stalled peer;
3. ``stalled``: one more receiver connects, completes the handshake and stops reading
   (``SO_RCVBUF`` 4096, and it connects to a server listener whose ``SO_SNDBUF`` is
   4096, so its sends block after ~70 KiB of buffering instead of MiBs), then the same
   200 broadcasts of 1000 bytes. 100-byte payloads fill those buffers only after ~700
   broadcasts; with 1000 bytes the stalled peer blocks the server's sends after ~70.
   Healthy receivers use the normal listener, so (2) is the like-for-like baseline.

Afterwards the stalled peer resumes reading, which shows what it had been sent and how
the server ended it (close code, if any). A broadcast not fully delivered within 5 s
ends its phase: the fan-out is reported as stalled after the broadcasts that completed.

The stalled peer's queue cannot reach asgi_rt's bound (256) within 200 broadcasts:
sends to it block after ~70, so ~130 are queued at the end, and its blocked send lasts
~2-3 s, under the 5 s ``send_timeout``. Use ``--stalled-broadcasts 400`` to see it evicted.

Measurement notes (2 cores): the server is pinned to one CPU and the client to the
other (``--no-pin`` to not). Each row shows both processes' CPU use over the measured
broadcasts: the server should be at ~1.0 and the client below it, reading about one
frame per ``epoll_wait`` (``events_per_poll`` in the JSON); otherwise the figures are
client-bound. ``other_cpu`` is what the rest of the machine used meanwhile.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from ._proc import Server, check, pin_cpus, print_targets, run_client, write_json

VARIANTS = ("asgi_rt", "naive", "queue_writer", "socketio")
WS_IMPLS = ("websockets-sansio", "websockets")  # uvicorn's default first


@dataclass
class Plan:
    receivers: int
    broadcasts: int
    warmup: int
    stalled_broadcasts: int
    payload: int
    stalled_payload: int
    rounds: int
    variants: tuple[str, ...]
    ws_impls: tuple[str, ...]
    stalled_variants: tuple[str, ...]
    sndbuf: int
    pin: bool


def parse_args(argv: list[str] | None = None) -> Plan:
    p = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="200 receivers, 100 broadcasts")
    p.add_argument("--receivers", type=int)
    p.add_argument("--broadcasts", type=int)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--stalled-broadcasts", type=int, help="for baseline/stalled phases")
    p.add_argument("--payload", type=int, default=100)
    p.add_argument("--stalled-payload", type=int, default=1000)
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated; also available: asgi_rt_task (asgi_rt with inline_send=False)",
    )
    p.add_argument("--ws", default=",".join(WS_IMPLS), help="uvicorn --ws implementations")
    p.add_argument(
        "--stalled-variants",
        default="asgi_rt,naive,queue_writer",
        help="variants that also run the baseline/stalled phases (socketio's take ~35 s "
        "per session, so it is left out by default to keep the run under 6 minutes)",
    )
    p.add_argument("--sndbuf", type=int, default=4096, help="SO_SNDBUF for the stalled peer")
    p.add_argument("--no-pin", action="store_true", help="do not pin server/client to CPUs")
    a = p.parse_args(argv)
    return Plan(
        receivers=a.receivers or (200 if a.quick else 1000),
        broadcasts=a.broadcasts or (100 if a.quick else 200),
        warmup=a.warmup,
        stalled_broadcasts=a.stalled_broadcasts or a.broadcasts or (100 if a.quick else 200),
        payload=a.payload,
        stalled_payload=a.stalled_payload,
        rounds=a.rounds,
        variants=tuple(v for v in a.variants.split(",") if v),
        ws_impls=tuple(w for w in a.ws.split(",") if w),
        stalled_variants=tuple(v for v in a.stalled_variants.split(",") if v),
        sndbuf=a.sndbuf,
        pin=not a.no_pin,
    )


def phases_for(plan: Plan, variant: str) -> list[dict[str, Any]]:
    phases: list[dict[str, Any]] = [
        {
            "name": "healthy",
            "payload": plan.payload,
            "warmup": plan.warmup,
            "broadcasts": plan.broadcasts,
        },
    ]
    if variant in plan.stalled_variants:
        common = {
            "payload": plan.stalled_payload,
            "warmup": plan.warmup,
            "broadcasts": plan.stalled_broadcasts,
        }
        phases.append({"name": "baseline", **common})
        phases.append({"name": "stalled", **common, "stalled": True})
    return phases


def run_session(plan: Plan, ws: str, variant: str, rnd: int) -> dict[str, Any]:
    server_cpu, client_cpu = pin_cpus(plan.pin)
    tag = f"fanout-{ws}-{variant}-r{rnd}"
    session: dict[str, Any] = {"ws": ws, "variant": variant, "round": rnd}
    t0 = time.perf_counter()
    try:
        with Server(variant, ws, tag=tag, sndbuf=plan.sndbuf, cpu=server_cpu) as server:
            config = {
                "port": server.port,
                "stall_port": server.stall_port,
                "server_pid": server.pid,
                "variant": variant,
                "receivers": plan.receivers,
                "phases": phases_for(plan, variant),
            }
            result, error = run_client(
                "bench._fanout_client", json.dumps(config), timeout=240, cpu=client_cpu
            )
            time.sleep(0.3)  # let the server log whatever the clients leaving caused
        session["server_log"] = str(server.log_path)
        session["server_problems"] = server.problems()[:20]
    except RuntimeError as exc:
        result, error = None, str(exc)
    session["seconds"] = time.perf_counter() - t0
    if result is not None:
        session.update(result)
    if error:
        session["error"] = error
    return session


# reporting ---------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    clean = [v for v in values if v == v]  # drop NaN
    return statistics.median(clean) if clean else float("nan")


def phase_values(sessions: list[dict[str, Any]], phase: str, key: str) -> list[float]:
    out = []
    for s in sessions:
        p = s.get("phases", {}).get(phase)
        if p is not None and key in p:
            out.append(float(p[key]))
    return out


def ratio(a: float, b: float) -> float:
    return a / b if b and a == a and b == b else float("nan")


def fmt(x: float, spec: str = ".2f") -> str:
    return "n/a" if x != x else format(x, spec)


def summarize(plan: Plan, sessions: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for ws in plan.ws_impls:
        per: dict[str, Any] = {}
        for variant in plan.variants:
            runs = [s for s in sessions if s["ws"] == ws and s["variant"] == variant]
            row: dict[str, Any] = {"rounds": len(runs)}
            for phase in ("healthy", "baseline", "stalled"):
                keys = (
                    "msgs_per_s",
                    "p50_ms",
                    "p99_ms",
                    "completeness",
                    "client_cpu",
                    "server_cpu",
                    "other_cpu",
                    "events_per_poll",
                )
                values = {k: med(phase_values(runs, phase, k)) for k in keys}
                if any(v == v for v in values.values()):
                    row[phase] = values
            stalled = [s["phases"]["stalled"] for s in runs if "stalled" in s.get("phases", {})]
            if stalled:
                row["stalled_outcomes"] = [describe_stall(variant, p) for p in stalled]
            row["errors"] = [s["error"] for s in runs if s.get("error")]
            row["errors"] += [
                f"{phase}: {p['error']}"
                for s in runs
                for phase, p in s.get("phases", {}).items()
                if p.get("error")
            ]
            row["server_problems"] = sorted(
                {line for s in runs for line in s.get("server_problems", [])}
            )[:10]
            per[variant] = row
        summary[ws] = per
    return summary


def describe_stall(variant: str, p: dict[str, Any]) -> str:
    """What happened to the publisher and to the stalled peer, in one line."""
    peer = p.get("stalled_peer", {})
    server = p.get("server", {})
    parts = []
    if "stalled_after" in p:
        parts.append(
            f"publisher stalled after {p['stalled_after']} broadcasts "
            f"(next one reached {p.get('stalled_got', 0)}/{p.get('healthy', 0)} in 5 s)"
        )
    elif "time_limit_after" in p:
        parts.append(f"phase hit its time limit after {p['time_limit_after']} broadcasts")
    mgr = server.get("manager", {})
    if mgr:
        evicted = mgr.get("slow_consumer_disconnects", 0) + mgr.get("send_timeouts", 0)
        if evicted:
            why = "queue full" if mgr.get("slow_consumer_disconnects") else "send timeout"
            parts.append(f"server closed the stalled peer ({why})")
        else:
            parts.append(f"not evicted during the run; {server.get('max_queued', 0)} queued")
    elif server.get("overflow_closes"):
        parts.append("server closed the stalled peer (queue full)")
    elif "max_queued" in server:
        parts.append(f"{server.get('max_queued', 0)} queued for it at the end")
    if peer:
        got = f"{peer.get('received_measured')}/{peer.get('sent_measured')}"
        if peer.get("close_code") is not None:
            parts.append(f"peer saw close {peer['close_code']} after {got} msgs")
        elif peer.get("connection_closed"):
            parts.append(f"peer's connection dropped without a close frame after {got} msgs")
        else:
            parts.append(f"peer got {got} msgs once it read again, still open")
    return "; ".join(parts)


def print_report(plan: Plan, summary: dict[str, Any]) -> list[str]:
    """Print the tables; return the target checks (also printed)."""
    checks: list[str] = []
    for ws, per in summary.items():
        print(
            f"\n== uvicorn --ws {ws}: healthy fan-out, {plan.receivers} receivers, "
            f"{plan.broadcasts} broadcasts x {plan.payload} B, median of {plan.rounds} rounds"
        )
        naive = per.get("naive", {}).get("healthy", {})
        head = (
            "variant",
            "msgs/s",
            "p50 ms",
            "p99 ms",
            "complete",
            "thr/naive",
            "p99/naive",
            "cli cpu",
            "srv cpu",
        )
        print("{:<14}{:>10}{:>9}{:>9}{:>10}{:>11}{:>11}{:>9}{:>9}".format(*head))
        for variant, row in per.items():
            h = row.get("healthy")
            if not h:
                print(f"{variant:<14}  FAILED: {'; '.join(row['errors'])[:200]}")
                continue
            print(
                f"{variant:<14}{h['msgs_per_s']:>10.0f}{h['p50_ms']:>9.2f}{h['p99_ms']:>9.2f}"
                f"{h['completeness'] * 100:>9.1f}%"
                f"{fmt(ratio(h['msgs_per_s'], naive.get('msgs_per_s', float('nan')))):>11}"
                f"{fmt(ratio(h['p99_ms'], naive.get('p99_ms', float('nan')))):>11}"
                f"{h['client_cpu']:>9.2f}{h['server_cpu']:>9.2f}"
            )
        a = per.get("asgi_rt", {}).get("healthy", {})
        s = per.get("socketio", {}).get("healthy", {})
        if a and s:
            print(
                f"asgi_rt / socketio: throughput {ratio(a['msgs_per_s'], s['msgs_per_s']):.2f}x, "
                f"p99 {ratio(a['p99_ms'], s['p99_ms']):.2f}x"
            )

        stalled_rows = {v: r for v, r in per.items() if "stalled" in r}
        if stalled_rows:
            print(
                f"\n-- {ws}: one stalled peer among {plan.receivers}, {plan.stalled_broadcasts} "
                f"broadcasts x {plan.stalled_payload} B (baseline: same session, no stalled peer)"
            )
            print(
                "{:<14}{:>10}{:>13}{:>13}{:>10}  {}".format(
                    "variant",
                    "healthy",
                    "p99 base ms",
                    "p99 stall ms",
                    "p99 ratio",
                    "publisher / stalled peer (round 1)",
                )
            )
            for variant, row in stalled_rows.items():
                b, st = row.get("baseline", {}), row["stalled"]
                print(
                    f"{variant:<14}{st['completeness'] * 100:>9.1f}%"
                    f"{fmt(b.get('p99_ms', float('nan'))):>13}{fmt(st['p99_ms']):>13}"
                    f"{fmt(ratio(st['p99_ms'], b.get('p99_ms', float('nan')))):>10}  "
                    f"{row['stalled_outcomes'][0]}"
                )

        if a and naive:
            checks.append(
                check(
                    f"[{ws}] asgi_rt throughput vs naive",
                    ratio(a["msgs_per_s"], naive["msgs_per_s"]),
                    ">=",
                    1.0,
                )
            )
            checks.append(
                check(
                    f"[{ws}] asgi_rt p99 vs naive", ratio(a["p99_ms"], naive["p99_ms"]), "<=", 1.5
                )
            )
        if a and s:
            checks.append(
                check(
                    f"[{ws}] asgi_rt throughput vs socketio",
                    ratio(a["msgs_per_s"], s["msgs_per_s"]),
                    ">=",
                    4.0,
                )
            )
        ar = per.get("asgi_rt", {})
        if "stalled" in ar and "baseline" in ar:
            checks.append(
                check(
                    f"[{ws}] asgi_rt healthy completeness with a stalled peer",
                    ar["stalled"]["completeness"],
                    ">=",
                    1.0,
                )
            )
            checks.append(
                check(
                    f"[{ws}] asgi_rt p99 with / without the stalled peer",
                    ratio(ar["stalled"]["p99_ms"], ar["baseline"]["p99_ms"]),
                    "<=",
                    1.5,
                )
            )
    print_targets(checks, notes_for(summary))
    return checks


def notes_for(summary: dict[str, Any]) -> list[str]:
    notes = []
    for ws, per in summary.items():
        for variant, row in per.items():
            for err in row["errors"]:
                notes.append(f"[{ws}] {variant}: {err[:300]}")
            for line in row["server_problems"]:
                notes.append(f"[{ws}] {variant} server log: {line[:200]}")
            h = row.get("healthy", {})
            if h and (h["client_cpu"] > 0.9 or h["server_cpu"] < 0.8):
                notes.append(
                    f"[{ws}] {variant}: server cpu {h['server_cpu']:.2f}, client cpu "
                    f"{h['client_cpu']:.2f} ({h['events_per_poll']:.1f} events/poll): "
                    "the server was not the bottleneck, figures may be client-bound"
                )
            if h and h["other_cpu"] > 0.15:
                notes.append(
                    f"[{ws}] {variant}: other processes used {h['other_cpu']:.2f} cores "
                    "during the healthy phase: figures are noisy"
                )
    return notes


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(argv)
    t0 = time.perf_counter()
    sessions: list[dict[str, Any]] = []
    total = len(plan.ws_impls) * plan.rounds * len(plan.variants)
    for ws in plan.ws_impls:
        for rnd in range(1, plan.rounds + 1):
            for variant in plan.variants:
                session = run_session(plan, ws, variant, rnd)
                sessions.append(session)
                h = session.get("phases", {}).get("healthy", {})
                status = session.get("error") or (
                    f"{h.get('msgs_per_s', 0):.0f} msgs/s, p99 {h.get('p99_ms', 0):.1f} ms"
                )
                print(
                    f"[{len(sessions)}/{total}] {ws:<18} round {rnd} {variant:<13} "
                    f"{session['seconds']:5.1f} s  {status}",
                    file=sys.stderr,
                    flush=True,
                )
    summary = summarize(plan, sessions)
    checks = print_report(plan, summary)
    elapsed = time.perf_counter() - t0
    print(f"\n{len(sessions)} sessions in {elapsed:.0f} s")
    write_json(
        "fanout.json",
        {
            "plan": asdict(plan),
            "summary": summary,
            "targets": checks,
            "sessions": sessions,
            "elapsed_s": elapsed,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
