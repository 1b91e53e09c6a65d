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
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from ._broadcast import (
    FanoutPlan,
    client_config,
    failures,
    healthy_status,
    phase_medians,
    phases_for,
    print_healthy,
    row_notes,
    stalled_cells,
    stalled_table,
)
from ._proc import Server, client_session, pin_cpus
from ._report import check, print_targets, run_each, write_json
from ._stats import NAN, fmt, ratio

VARIANTS = ("asgi_rt", "naive", "queue_writer", "socketio")
WS_IMPLS = ("websockets-sansio", "websockets")  # uvicorn's default first


@dataclass
class Plan(FanoutPlan):
    ws_impls: tuple[str, ...]


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
        help="comma-separated; also available: asgi_rt_task (asgi_rt with inline_send=False), "
        "asgi_rt_stack (asgi_rt behind Telemetry, Handshake and FirstMessageAuth middleware), "
        "asgi_rt_stack_direct (the same with ConnectionManager(direct_send=True))",
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


def run_session(plan: Plan, ws: str, variant: str, rnd: int) -> dict[str, Any]:
    server_cpu, client_cpu = pin_cpus(plan.pin)
    tag = f"fanout-{ws}-{variant}-r{rnd}"
    server = Server(variant, ws, tag=tag, sndbuf=plan.sndbuf, cpu=server_cpu)
    return client_session(
        server,
        "bench._fanout_client",
        lambda server: client_config(server, plan, variant, phases_for(plan, variant)),
        {"ws": ws, "variant": variant, "round": rnd},
        timeout=240,
        cpu=client_cpu,
    )


# reporting ---------------------------------------------------------------------------------


def summarize(plan: Plan, sessions: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for ws in plan.ws_impls:
        per: dict[str, Any] = {}
        for variant in plan.variants:
            runs = [s for s in sessions if s["ws"] == ws and s["variant"] == variant]
            row: dict[str, Any] = {"rounds": len(runs), **phase_medians(runs)}
            stalled = [s["phases"]["stalled"] for s in runs if "stalled" in s.get("phases", {})]
            if stalled:
                row["stalled_outcomes"] = [describe_stall(variant, p) for p in stalled]
            per[variant] = {**row, **failures(runs)}
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
        checks += print_ws(plan, ws, per)
    print_targets(checks, notes_for(summary))
    return checks


def print_ws(plan: Plan, ws: str, per: dict[str, Any]) -> list[str]:
    """The tables of one ``--ws`` implementation; return its target checks."""
    print(
        f"\n== uvicorn --ws {ws}: healthy fan-out, {plan.receivers} receivers, "
        f"{plan.broadcasts} broadcasts x {plan.payload} B, median of {plan.rounds} rounds"
    )
    naive = per.get("naive", {}).get("healthy", {})

    def vs_naive(row: dict[str, Any], h: dict[str, Any]) -> tuple[str, str]:
        thr = ratio(h["msgs_per_s"], naive.get("msgs_per_s", NAN))
        return fmt(thr), fmt(ratio(h["p99_ms"], naive.get("p99_ms", NAN)))

    line = "{:<14}{:>10}{:>9}{:>9}{:>10}{:>11}{:>11}{:>9}{:>9}"
    print_healthy(per, line, ("thr/naive", "p99/naive"), vs_naive)
    a = per.get("asgi_rt", {}).get("healthy", {})
    s = per.get("socketio", {}).get("healthy", {})
    if a and s:
        print(
            f"asgi_rt / socketio: throughput {ratio(a['msgs_per_s'], s['msgs_per_s']):.2f}x, "
            f"p99 {ratio(a['p99_ms'], s['p99_ms']):.2f}x"
        )
    print_stalled(plan, ws, per)
    return checks_for(ws, per)


def print_stalled(plan: Plan, ws: str, per: dict[str, Any]) -> None:
    heading = (
        f"\n-- {ws}: one stalled peer among {plan.receivers}, {plan.stalled_broadcasts} "
        f"broadcasts x {plan.stalled_payload} B (baseline: same session, no stalled peer)"
    )
    line = "{:<14}{:>10}{:>13}{:>13}{:>10}  {}"
    rows = stalled_table(per, heading, line, ("publisher / stalled peer (round 1)",))
    for variant, row in rows.items():
        print(line.format(variant, *stalled_cells(row), row["stalled_outcomes"][0]))


def checks_for(ws: str, per: dict[str, Any]) -> list[str]:
    naive = per.get("naive", {}).get("healthy", {})
    a = per.get("asgi_rt", {}).get("healthy", {})
    s = per.get("socketio", {}).get("healthy", {})
    ar = per.get("asgi_rt", {})
    targets: list[tuple[str, float, str, float]] = []
    if a and naive:
        targets.append(
            ("asgi_rt throughput vs naive", ratio(a["msgs_per_s"], naive["msgs_per_s"]), ">=", 1.0)
        )
        targets.append(("asgi_rt p99 vs naive", ratio(a["p99_ms"], naive["p99_ms"]), "<=", 1.5))
    if a and s:
        targets.append(
            ("asgi_rt throughput vs socketio", ratio(a["msgs_per_s"], s["msgs_per_s"]), ">=", 4.0)
        )
    if "stalled" in ar and "baseline" in ar:
        st, base = ar["stalled"], ar["baseline"]
        targets += [
            ("asgi_rt healthy completeness with a stalled peer", st["completeness"], ">=", 1.0),
            (
                "asgi_rt p99 with / without the stalled peer",
                ratio(st["p99_ms"], base["p99_ms"]),
                "<=",
                1.5,
            ),
        ]
    return [check(f"[{ws}] {name}", value, op, target) for name, value, op, target in targets]


def notes_for(summary: dict[str, Any]) -> list[str]:
    notes = []
    for ws, per in summary.items():
        for variant, row in per.items():
            notes += row_notes(
                f"[{ws}] {variant}",
                row,
                0.15,
                bound="the server was not the bottleneck, figures may be client-bound",
                busy=" during the healthy phase: figures are noisy",
            )
    return notes


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(argv)
    t0 = time.perf_counter()
    runs = [
        (f"{ws:<18} round {rnd} {variant:<13}", partial(run_session, plan, ws, variant, rnd))
        for ws in plan.ws_impls
        for rnd in range(1, plan.rounds + 1)
        for variant in plan.variants
    ]
    sessions = run_each(runs, lambda session: session.get("error") or healthy_status(session))
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
