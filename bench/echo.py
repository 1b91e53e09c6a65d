"""Echo benchmark: the cost of per-frame telemetry, on a real uvicorn.

    python -m bench.echo            # full run, ~3 minutes on 2 cores
    python -m bench.echo --quick    # smoke run, ~35 s
    python -m bench.echo --profile telemetry_1.0,telemetry_0.01   # py-spy, see below

50 clients x 2000 round trips of 64-byte text frames against a Starlette echo endpoint
(``bench.echo_server``), each client a closed loop (send, wait for the echo, repeat)
after 200 warm-up round trips. Variants:

1. ``bare``: no middleware;
2. ``telemetry_0.01``: ``asgi_rt.TelemetryMiddleware``, fresh-registry ``Metrics``, SDK
   ``TracerProvider`` + ``BatchSpanProcessor`` to a no-op exporter, frame_sample_ratio 0.01;
3. ``telemetry_1.0``: the same with frame_sample_ratio 1.0;
4. ``otel_asgi``: ``opentelemetry.instrumentation.asgi.OpenTelemetryMiddleware``, same SDK.

For each uvicorn WebSocket implementation (``websockets-sansio``, uvicorn's default,
first; then the legacy ``websockets``), each round runs every variant once, A B C D, in a
fresh server process and a fresh client process (``bench._echo_client``, raw epoll
sockets). The server is pinned to one CPU and the client to the other (``--no-pin``).
Tables show medians over rounds; "thr/bare" is the median over rounds of the variant's
throughput divided by ``bare``'s in the same round. ``other_cpu`` is what the rest of
the machine used meanwhile (>0.15 cores is flagged as noise).

After the measured phase every client closes (1000) and the server's ``/stats`` is
checked: spans exported, and for asgi_rt what the middleware counted (frames in/out,
accepted, active, client closes); a mismatch is printed as a note.

``--profile V1,V2`` skips the benchmark: it runs one session per listed variant (first
``--ws`` only) with ``py-spy record --nonblocking --format raw`` attached to the server,
writes ``bench/out/echo-profile-<ws>-<variant>.txt`` and prints where the server's
samples went (see ``bench._pyspy``).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ._proc import OUT_DIR, ROOT, Server, client_session, pin_cpus
from ._pyspy import print_profile, start_py_spy, summarize_raw
from ._report import check, print_targets, run_each, write_json
from ._stats import fmt, med
from .echo_server import EXTRA_VARIANTS, VARIANTS

WS_IMPLS = ("websockets-sansio", "websockets")  # uvicorn's default first
TARGETS = {"telemetry_0.01": 0.85, "telemetry_1.0": 0.55, "router": 0.8}
EXPECTED = {"otel_asgi": 0.32}  # PERF-NOTES, legacy websockets; printed, not a target


@dataclass
class Plan:
    clients: int
    round_trips: int
    warmup: int
    payload: int
    rounds: int
    variants: tuple[str, ...]
    ws_impls: tuple[str, ...]
    pin: bool
    profile: tuple[str, ...]
    profile_rate: int


def parse_args(argv: list[str] | None = None) -> Plan:
    p = argparse.ArgumentParser(prog="python -m bench.echo", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="500 round trips per client, 1 round")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--round-trips", type=int, help="per client (default 2000)")
    p.add_argument("--warmup", type=int, default=200, help="per client")
    p.add_argument("--payload", type=int, default=64)
    p.add_argument("--rounds", type=int, help="default 2 (--quick: 1)")
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated; also: {', '.join(EXTRA_VARIANTS)} (see bench.echo_server)",
    )
    p.add_argument("--ws", default=",".join(WS_IMPLS), help="uvicorn --ws implementations")
    p.add_argument("--no-pin", action="store_true", help="do not pin server/client to CPUs")
    p.add_argument("--profile", default="", help="comma-separated variants to profile")
    p.add_argument("--profile-rate", type=int, default=250, help="py-spy samples/s")
    a = p.parse_args(argv)
    variants = tuple(v for v in a.variants.split(",") if v)
    unknown = [
        v for v in (*variants, *a.profile.split(",")) if v and v not in (*VARIANTS, *EXTRA_VARIANTS)
    ]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; see --help")
    return Plan(
        clients=a.clients,
        round_trips=a.round_trips or (500 if a.quick else 2000),
        warmup=a.warmup,
        payload=a.payload,
        rounds=a.rounds or (1 if a.quick else 2),
        variants=variants,
        ws_impls=tuple(w for w in a.ws.split(",") if w),
        pin=not a.no_pin,
        profile=tuple(v for v in a.profile.split(",") if v),
        profile_rate=a.profile_rate,
    )


def run_session(
    plan: Plan, ws: str, variant: str, rnd: int, profile_to: Path | None = None
) -> dict[str, Any]:
    server_cpu, client_cpu = pin_cpus(plan.pin)
    tag = f"echo-{ws}-{variant}-r{rnd}"
    session = {"ws": ws, "variant": variant, "round": rnd, "clients": plan.clients}
    config = {
        "clients": plan.clients,
        "round_trips": plan.round_trips,
        "warmup": plan.warmup,
        "payload": plan.payload,
    }
    return client_session(
        Server(variant, ws, tag=tag, cpu=server_cpu, module="bench.echo_server"),
        "bench._echo_client",
        lambda server: {"port": server.port, "server_pid": server.pid, **config},
        session,
        timeout=240,
        cpu=client_cpu,
        linger=0.2,
        profile=(
            None
            if profile_to is None
            else lambda pid: start_py_spy(pid, profile_to, plan.profile_rate)
        ),
        check=check_session,
    )


def check_session(s: dict[str, Any]) -> list[str]:
    """What looks wrong in a session: lost/garbled echoes, telemetry counts that disagree."""
    problems = []
    if s.get("round_trips", 0) != s.get("expected"):
        problems.append(f"{s.get('round_trips')} of {s.get('expected')} round trips completed")
    if s.get("mismatches"):
        problems.append(f"{s['mismatches']} echoes differed from what was sent")
    close = s.get("close", {})
    server = s.get("server", {})
    if "error" in server:
        problems.append(f"/stats failed: {server['error']}")
        return problems
    sent = s.get("sent_total", 0)
    n = s["clients"]
    variant = s["variant"]
    if variant.startswith("telemetry"):  # the asgi_rt variants
        expected = {
            "frames_in": sent,
            "frames_out": sent,
            "size_in_count": sent,
            "processing_count": sent,
            "send_duration_count": sent,
            "accepted": n,
            "active": 0,
            "client_closes_1000": n,
        }
        for key, want in expected.items():
            got = server.get(key)
            if got is None or got != want:
                problems.append(f"asgi_rt recorded {key}={got}, expected {want}")
        if variant == "telemetry_1.0":  # _noproc exports nothing
            want_spans = 2 * sent + 2 * n  # receive + send per frame; handshake + close
            if server.get("spans_exported") != want_spans:
                problems.append(
                    f"{server.get('spans_exported')} spans exported, expected {want_spans}"
                )
    if close.get("closed_by_server_reply") != n:
        problems.append(
            f"{close.get('closed_by_server_reply')}/{n} clients got a 1000 close reply "
            f"({close.get('still_open')} still open, errors {close.get('conn_errors')})"
        )
    return problems


# reporting ---------------------------------------------------------------------------------


KEYS = ("rt_per_s", "p50_ms", "p99_ms", "server_cpu", "client_cpu", "other_cpu", "events_per_poll")


def summarize(plan: Plan, sessions: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for ws in plan.ws_impls:
        per: dict[str, Any] = {}
        bare = {s["round"]: s for s in sessions if s["ws"] == ws and s["variant"] == "bare"}
        for variant in plan.variants:
            runs = [
                s for s in sessions if s["ws"] == ws and s["variant"] == variant and "rt_per_s" in s
            ]
            row: dict[str, Any] = {"rounds": len(runs)}
            for key in KEYS:
                row[key] = med([float(s[key]) for s in runs])
            ratios = []
            for s in runs:
                b = bare.get(s["round"], {})
                if b.get("rt_per_s"):
                    ratios.append(s["rt_per_s"] / b["rt_per_s"])
            row["ratios"] = ratios
            row["other_by_round"] = {s["round"]: s["other_cpu"] for s in runs}
            row["thr_vs_bare"] = med(ratios)
            all_runs = [s for s in sessions if s["ws"] == ws and s["variant"] == variant]
            row["errors"] = [f"round {s['round']}: {s['error']}" for s in all_runs if "error" in s]
            row["checks"] = sorted({c for s in all_runs for c in s.get("checks", [])})
            row["server_problems"] = sorted(
                {line for s in all_runs for line in s.get("server_problems", [])}
            )[:10]
            per[variant] = row
        summary[ws] = per
    return summary


def print_report(plan: Plan, summary: dict[str, Any]) -> list[str]:
    checks: list[str] = []
    for ws, per in summary.items():
        print(
            f"\n== uvicorn --ws {ws}: echo, {plan.clients} clients x {plan.round_trips} round "
            f"trips of {plan.payload} B, median of {plan.rounds} rounds"
        )
        head = (
            "variant",
            "rt/s",
            "p50 ms",
            "p99 ms",
            "thr/bare",
            "per round",
            "srv cpu",
            "cli cpu",
            "other",
        )
        print("{:<21}{:>9}{:>9}{:>9}{:>10}  {:<12}{:>8}{:>8}{:>7}".format(*head))
        for variant, row in per.items():
            if not row["rounds"]:
                print(f"{variant:<21}  FAILED: {'; '.join(row['errors'])[:200]}")
                continue
            rounds = " ".join(f"{r:.2f}" for r in row["ratios"])
            print(
                f"{variant:<21}{row['rt_per_s']:>9.0f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
                f"{fmt(row['thr_vs_bare']):>10}  {rounds:<12}{row['server_cpu']:>8.2f}"
                f"{row['client_cpu']:>8.2f}{row['other_cpu']:>7.2f}"
            )
        for variant, target in TARGETS.items():
            if variant in per and "bare" in per:
                checks.append(check(f"[{ws}] {variant} throughput vs bare",
                                     per[variant]["thr_vs_bare"], ">=", target))  # fmt: skip
        for variant, expected in EXPECTED.items():
            if variant in per and "bare" in per:
                got = per[variant]["thr_vs_bare"]
                checks.append(f"info  [{ws}] {variant} throughput vs bare: {fmt(got)} "
                              f"(PERF-NOTES: ~{expected:g}, legacy websockets)")  # fmt: skip
    print_targets(checks, notes_for(summary))
    return checks


def notes_for(summary: dict[str, Any]) -> list[str]:
    notes = []
    for ws, per in summary.items():
        for variant, row in per.items():
            for err in row["errors"]:
                notes.append(f"[{ws}] {variant}: {err[:300]}")
            for line in row["checks"]:
                notes.append(f"[{ws}] {variant}: {line}")
            for line in row["server_problems"]:
                notes.append(f"[{ws}] {variant} server log: {line[:200]}")
            if not row["rounds"]:
                continue
            if row["client_cpu"] > 0.9 or row["server_cpu"] < 0.9:
                notes.append(
                    f"[{ws}] {variant}: server cpu {row['server_cpu']:.2f}, client cpu "
                    f"{row['client_cpu']:.2f}: the server was not the bottleneck, "
                    "figures may be client-bound"
                )
            busy = {r: o for r, o in row["other_by_round"].items() if o > 0.15}
            if busy:
                rounds = ", ".join(f"round {r}: {o:.2f}" for r, o in sorted(busy.items()))
                notes.append(
                    f"[{ws}] {variant}: other processes used cores during the measured phase "
                    f"({rounds}): those figures are noisy"
                )
    return notes


# main ----------------------------------------------------------------------------------------


SOURCES = (
    "middleware/telemetry.py",
    "middleware/_wsrecorder.py",
    "middleware/_tracing.py",
    "_families.py",
    "metrics.py",
)


def source_digest() -> dict[str, str]:
    """Short hashes of the asgi_rt files under test (they may be edited while we run)."""
    out = {}
    for name in SOURCES:
        path = ROOT / "src" / "asgi_rt" / name
        try:
            out[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        except OSError:
            out[name] = "missing"
    return out


def status_line(session: dict[str, Any]) -> str:
    return session.get("error") or (
        f"{session.get('rt_per_s', 0):.0f} rt/s, p99 {session.get('p99_ms', 0):.1f} "
        f"ms, other cpu {session.get('other_cpu', 0):.2f}"
    )


def run_benchmark(plan: Plan) -> int:
    t0 = time.perf_counter()
    sources = source_digest()
    runs = [
        (f"{ws:<18} round {rnd} {variant:<15}", partial(run_session, plan, ws, variant, rnd))
        for ws in plan.ws_impls
        for rnd in range(1, plan.rounds + 1)
        for variant in plan.variants
    ]
    sessions = run_each(runs, status_line)
    summary = summarize(plan, sessions)
    checks = print_report(plan, summary)
    elapsed = time.perf_counter() - t0
    if source_digest() != sources:
        print("\nNote: asgi_rt's telemetry sources changed during the run; rerun to compare.")
    print(f"\n{len(sessions)} sessions in {elapsed:.0f} s")
    write_json(
        "echo.json",
        {
            "plan": asdict(plan),
            "asgi_rt_sources": sources,
            "summary": summary,
            "targets": checks,
            "sessions": sessions,
            "elapsed_s": elapsed,
        },
    )
    return 0


def run_profiles(plan: Plan) -> int:
    ws = plan.ws_impls[0]
    profiles: dict[str, Any] = {}
    for variant in plan.profile:
        out = OUT_DIR / f"echo-profile-{ws}-{variant}.txt"
        session = run_session(plan, ws, variant, 1, profile_to=out)
        print(
            f"\n== py-spy: {variant} under uvicorn --ws {ws}: "
            f"{session.get('rt_per_s', 0):.0f} rt/s while sampled ({out.relative_to(ROOT)})"
        )
        if session.get("error") or session.get("profile_error"):
            print(f"  failed: {session.get('error') or session.get('profile_error')}")
            continue
        spy = session.get("py_spy", {})
        if spy:
            # nonblocking sampling reads the stacks while they change; a failed read is
            # dropped, so whatever code it would have shown is under-represented
            tried = spy["samples"] + spy["errors"]
            print(
                f"  py-spy: {spy['samples']} samples, {spy['errors']} failed reads "
                f"({100 * spy['errors'] / max(1, tried):.0f}%: the code that failed is "
                "missing from the percentages below)"
            )
        summary = summarize_raw(out)
        print_profile(summary)
        profiles[variant] = {
            "rt_per_s": session.get("rt_per_s"),
            "py_spy": spy,
            "server_problems": session.get("server_problems"),
            "checks": session.get("checks"),
            **summary,
        }
    write_json("echo-profile.json", {"ws": ws, "plan": asdict(plan), "profiles": profiles})
    return 0


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(argv)
    return run_profiles(plan) if plan.profile else run_benchmark(plan)


if __name__ == "__main__":
    sys.exit(main())
