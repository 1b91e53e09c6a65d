"""What ``bench.fanout`` and ``bench.sse`` share: the phases, the client's config, the summary.

Both run a ``bench._broadcast_client`` process per session against a fresh server:
``healthy`` (closed loop), and for the variants in ``stalled_variants`` a ``baseline``
and a ``stalled`` phase (one more receiver that stops reading). Their tables share most
columns, and a variant with no healthy phase reads ``FAILED``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._proc import Server
from ._stats import NAN, fmt, med, ratio

PHASES = ("healthy", "baseline", "stalled")
PHASE_KEYS = (
    "msgs_per_s",
    "p50_ms",
    "p99_ms",
    "completeness",
    "client_cpu",
    "server_cpu",
    "other_cpu",
    "events_per_poll",
)
HEALTHY_HEAD = ("variant", "msgs/s", "p50 ms", "p99 ms", "complete")
CPU_HEAD = ("cli cpu", "srv cpu")
STALLED_HEAD = ("variant", "healthy", "p99 base ms", "p99 stall ms", "p99 ratio")


@dataclass
class FanoutPlan:
    receivers: int
    broadcasts: int
    warmup: int
    stalled_broadcasts: int
    payload: int
    stalled_payload: int
    rounds: int
    variants: tuple[str, ...]
    stalled_variants: tuple[str, ...]
    sndbuf: int
    pin: bool


def phases_for(
    plan: FanoutPlan, variant: str, *, broadcasts: int | None = None, stalled: bool = True
) -> list[dict[str, Any]]:
    """The session's phases: ``healthy`` (``broadcasts``, default the plan's), then
    ``baseline`` and ``stalled`` for the plan's ``stalled_variants`` (unless not ``stalled``)."""
    healthy = plan.broadcasts if broadcasts is None else broadcasts
    phases: list[dict[str, Any]] = [
        {"name": "healthy", "payload": plan.payload, "warmup": plan.warmup, "broadcasts": healthy}
    ]
    if stalled and variant in plan.stalled_variants:
        common = {
            "payload": plan.stalled_payload,
            "warmup": plan.warmup,
            "broadcasts": plan.stalled_broadcasts,
        }
        phases.append({"name": "baseline", **common})
        phases.append({"name": "stalled", **common, "stalled": True})
    return phases


def client_config(
    server: Server, plan: FanoutPlan, variant: str, phases: list[dict[str, Any]]
) -> dict[str, Any]:
    """The ``bench._broadcast_client.Config`` of a session, as JSON."""
    return {
        "port": server.port,
        "stall_port": server.stall_port,
        "server_pid": server.pid,
        "variant": variant,
        "receivers": plan.receivers,
        "phases": phases,
    }


# summary -------------------------------------------------------------------------------------


def phase_values(sessions: list[dict[str, Any]], phase: str, key: str) -> list[float]:
    out = []
    for s in sessions:
        p = s.get("phases", {}).get(phase)
        if p is not None and key in p:
            out.append(float(p[key]))
    return out


def phase_medians(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per phase that any of ``runs`` measured: the median of each of :data:`PHASE_KEYS`."""
    out = {}
    for phase in PHASES:
        values = {k: med(phase_values(runs, phase, k)) for k in PHASE_KEYS}
        if any(v == v for v in values.values()):
            out[phase] = values
    return out


def failures(runs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """``errors`` of the sessions and of their phases; ``server_problems`` (up to 10)."""
    errors = [s["error"] for s in runs if s.get("error")]
    errors += [
        f"{phase}: {p['error']}"
        for s in runs
        for phase, p in s.get("phases", {}).items()
        if p.get("error")
    ]
    problems = sorted({line for s in runs for line in s.get("server_problems", [])})[:10]
    return {"errors": errors, "server_problems": problems}


def row_notes(label: str, row: dict[str, Any], noisy: float, *, bound: str, busy: str) -> list[str]:
    """Errors, server log problems, and what may have skewed the healthy phase: the client
    as the limit (``": <bound>"``) or other processes using over ``noisy`` cores (``busy``)."""
    notes = [f"{label}: {err[:300]}" for err in row["errors"]]
    notes += [f"{label} server log: {line[:200]}" for line in row["server_problems"]]
    h = row.get("healthy", {})
    if h and (h["client_cpu"] > 0.9 or h["server_cpu"] < 0.8):
        notes.append(
            f"{label}: server cpu {h['server_cpu']:.2f}, client cpu {h['client_cpu']:.2f} "
            f"({h['events_per_poll']:.1f} events/poll): {bound}"
        )
    if h and h["other_cpu"] > noisy:
        notes.append(f"{label}: other processes used {h['other_cpu']:.2f} cores{busy}")
    return notes


def healthy_status(session: dict[str, Any]) -> str:
    """The session's healthy phase in a few words, for the progress line."""
    h = session.get("phases", {}).get("healthy", {})
    return f"{h.get('msgs_per_s', 0):.0f} msgs/s, p99 {h.get('p99_ms', 0):.1f} ms"


# tables --------------------------------------------------------------------------------------


def print_healthy(
    per: dict[str, Any],
    line: str,
    ratio_head: tuple[str, str],
    ratios: Callable[[dict[str, Any], dict[str, Any]], tuple[str, str]],
    *,
    other: bool = False,
) -> None:
    """The healthy-phase table, a row per variant, ``line`` formatting each.

    Columns: variant, msgs/s, p50, p99, completeness, ``ratios(row, healthy)`` under
    ``ratio_head``, the client's and the server's CPU, and (``other``) everyone else's.
    """
    print(line.format(*HEALTHY_HEAD, *ratio_head, *CPU_HEAD, *(("other",) if other else ())))
    for variant, row in per.items():
        h = row.get("healthy")
        if not h:
            print(f"{variant:<14}  FAILED: {'; '.join(row['errors'])[:200]}")
            continue
        cells = [f"{h['msgs_per_s']:.0f}", f"{h['p50_ms']:.2f}", f"{h['p99_ms']:.2f}"]
        cells += [f"{h['completeness'] * 100:.1f}%", *ratios(row, h)]
        cells += [f"{h['client_cpu']:.2f}", f"{h['server_cpu']:.2f}"]
        if other:
            cells.append(f"{h['other_cpu']:.2f}")
        print(line.format(variant, *cells))


def stalled_table(
    per: dict[str, Any], heading: str, line: str, more_head: tuple[str, ...]
) -> dict[str, Any]:
    """The rows of the variants that ran the stalled phase; if any, print ``heading`` and
    the table's head: :data:`STALLED_HEAD` and ``more_head``, formatted by ``line``."""
    rows = {variant: row for variant, row in per.items() if "stalled" in row}
    if rows:
        print(heading)
        print(line.format(*STALLED_HEAD, *more_head))
    return rows


def stalled_cells(row: dict[str, Any]) -> tuple[str, ...]:
    """The cells under :data:`STALLED_HEAD` after the variant."""
    b, st = row.get("baseline", {}), row["stalled"]
    base = b.get("p99_ms", NAN)
    return (
        f"{st['completeness'] * 100:.1f}%",
        fmt(base),
        fmt(st["p99_ms"]),
        fmt(ratio(st["p99_ms"], base)),
    )
