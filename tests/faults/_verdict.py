"""What the members and the publisher saw in a fault scenario, judged against the contract.

A publication *applied* if its publisher was told so (``ok``, with its ``(epoch, seq)``),
or if any member received it. For every member, every applied position after the one it
joined at must be either delivered exactly once, in order, or *covered* by a
``recovery_failed`` frame: one that names the new position (``epoch``, ``seq``) covers
the new epoch's publications up to ``seq``, and the publications of the member's
previous epoch after the last one it got. The publisher told the truth if nothing that
raised ``PublishNotApplied`` reached anyone, and every other error was
``PublishOutcomeUnknown``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._cluster import Member, Outcome

__all__ = ["Verdict", "judge"]

Position = tuple[str, int]  # (epoch, seq)
UNKNOWN_OUTCOMES = {"PublishOutcomeUnknown"}


@dataclass
class Verdict:
    fault: str
    problems: list[str] = field(default_factory=list)
    lost: int = 0  # distinct applied publications some member neither got nor was told of
    duplicated: int = 0  # room frames a member had already received
    signalled: int = 0  # distinct publications covered by a recovery_failed
    recovery_failed: int = 0  # recovery_failed frames, all members
    resumed: float | None = None  # s from Redis usable to live delivery at every member
    publisher: dict[str, int] = field(default_factory=dict)  # what it was told: count each

    def row(self) -> str:
        resumed = "never" if self.resumed is None else f"{self.resumed:.2f} s"
        told = ", ".join(f"{k} {v}" for k, v in sorted(self.publisher.items()))
        return (f"| {self.fault} | {self.lost} | {self.duplicated} | {self.signalled} "
                f"({self.recovery_failed} frames) | {resumed} | {told} |")  # fmt: skip


@dataclass
class _Track:
    """One member's stream, replayed frame by frame."""

    member: Member
    delivered: dict[Position, int] = field(default_factory=dict)  # position -> times
    numbers: dict[int, int] = field(default_factory=dict)  # payload n -> times
    last: dict[str, int] = field(default_factory=dict)  # epoch -> last seq received
    joined: Position | None = None
    covers: list[tuple[str | None, int | None, dict[str, int]]] = field(default_factory=list)
    unpositioned: int = 0  # recovery_failed frames without epoch/seq
    no_epoch: int = 0  # room frames without "epoch"


def judge(fault: str, members: list[Member], outcomes: list[Outcome]) -> Verdict:
    verdict = Verdict(fault)
    by_n = {o.n: o for o in outcomes}
    tracks = [_replay(m, by_n, verdict) for m in members]
    applied = _applied_positions(tracks, outcomes)
    lost: set[Position] = set()
    signalled: set[Position] = set()
    for track in tracks:
        for position in sorted(applied, key=lambda p: (p[0], p[1])):
            _account(track, position, lost, signalled, verdict)
    verdict.lost, verdict.signalled = len(lost), len(signalled)
    _judge_publisher(tracks, outcomes, verdict)
    return verdict


def _position(frame: dict[str, Any], by_n: dict[int, Outcome], current: str | None,
              track: _Track) -> Position:  # fmt: skip
    epoch = frame.get("epoch")
    if epoch is None:
        track.no_epoch += 1
        data = frame.get("data")
        told = by_n.get(data.get("n", -1)) if isinstance(data, dict) else None
        epoch = told.epoch if told is not None and told.ok else current
    return str(epoch), int(frame["seq"])


def _replay(member: Member, by_n: dict[int, Outcome], verdict: Verdict) -> _Track:
    track = _Track(member)
    current: str | None = None
    for _, frame in member.frames:
        kind = frame.get("type")
        if kind == "auth_ok":
            continue
        if kind == "joined":
            current = frame.get("epoch")
            track.joined = (str(current), int(frame.get("seq", 0)))
            if current is not None:
                track.last[current] = int(frame.get("seq", 0))
        elif kind == "recovery_failed":
            _note_recovery(track, frame, current, verdict)
            current = frame.get("epoch", current)
        elif "seq" in frame and "data" in frame:
            position = _position(frame, by_n, current, track)
            _note_delivery(track, frame, position, verdict)
            current = position[0]
        else:
            verdict.problems.append(f"{member.name}: unexpected frame {frame}")
    if track.unpositioned:
        verdict.problems.append(f"{member.name}: {track.unpositioned} recovery_failed frames "
                                "without the new position (epoch, seq)")  # fmt: skip
    if track.no_epoch:
        verdict.problems.append(f"{member.name}: {track.no_epoch} room frames without 'epoch'")
    return track


def _note_recovery(track: _Track, frame: dict[str, Any], current: str | None,
                   verdict: Verdict) -> None:  # fmt: skip
    verdict.recovery_failed += 1
    epoch, seq = frame.get("epoch"), frame.get("seq")
    if epoch is None or seq is None:
        track.unpositioned += 1
    track.covers.append((epoch, None if seq is None else int(seq), dict(track.last)))
    if epoch is not None and seq is not None:
        track.last[str(epoch)] = max(track.last.get(str(epoch), 0), int(seq))


def _note_delivery(track: _Track, frame: dict[str, Any], position: Position,
                   verdict: Verdict) -> None:  # fmt: skip
    name = track.member.name
    epoch, seq = position
    data = frame["data"]
    n = data.get("n") if isinstance(data, dict) else None
    repeated = track.delivered.get(position, 0) or (n is not None and track.numbers.get(n, 0))
    if repeated:
        verdict.duplicated += 1
        verdict.problems.append(f"{name}: duplicate {position} n={n}")
    elif seq <= track.last.get(epoch, 0):
        verdict.problems.append(
            f"{name}: out of order: seq {seq} after {track.last[epoch]} in epoch {epoch}"
        )
    track.delivered[position] = track.delivered.get(position, 0) + 1
    if n is not None:
        track.numbers[n] = track.numbers.get(n, 0) + 1
    track.last[epoch] = max(track.last.get(epoch, 0), seq)


def _applied_positions(tracks: list[_Track], outcomes: list[Outcome]) -> set[Position]:
    """Told applied, or received by someone; and within an epoch every seq below the highest
    known (a seq is only ever handed out by a publish that applied)."""
    top: dict[str, int] = {}
    known = [(o.epoch, o.seq) for o in outcomes if o.ok and o.epoch is not None]
    known += [p for t in tracks for p in t.delivered]
    for epoch, seq in known:
        if seq is not None:
            top[str(epoch)] = max(top.get(str(epoch), 0), seq)
    return {(epoch, seq) for epoch, high in top.items() for seq in range(1, high + 1)}


def _account(track: _Track, position: Position, lost: set[Position],
             signalled: set[Position], verdict: Verdict) -> None:  # fmt: skip
    epoch, seq = position
    if track.joined is not None and track.joined[0] == epoch and seq <= track.joined[1]:
        return  # before this member joined: not its business
    if position in track.delivered:
        return
    for cover_epoch, cover_seq, last_before in track.covers:
        if cover_epoch == epoch and cover_seq is not None and seq <= cover_seq:
            signalled.add(position)
            return
        if cover_epoch != epoch and epoch in last_before and seq > last_before[epoch]:
            signalled.add(position)
            return
    if position not in lost:
        verdict.problems.append(f"{track.member.name}: never got {position} and was not told")
    lost.add(position)


def _judge_publisher(tracks: list[_Track], outcomes: list[Outcome], verdict: Verdict) -> None:
    delivered = {n for t in tracks for n in t.numbers}
    for outcome in outcomes:
        told = "ok" if outcome.ok else str(outcome.error)
        for earlier in outcome.retried:
            verdict.publisher[f"{earlier} (retried)"] = (
                verdict.publisher.get(f"{earlier} (retried)", 0) + 1
            )
        verdict.publisher[told] = verdict.publisher.get(told, 0) + 1
        if outcome.ok:
            continue
        if outcome.retried and outcome.n in delivered:
            continue  # gave up retrying, but some attempt applied: fine, it was unknown
        if outcome.error == "PublishNotApplied" and outcome.n in delivered:
            verdict.problems.append(f"publish n={outcome.n} raised PublishNotApplied "
                                    "but was delivered")  # fmt: skip
        elif outcome.error not in UNKNOWN_OUTCOMES | {"PublishNotApplied"}:
            applied = "delivered" if outcome.n in delivered else "not delivered"
            verdict.problems.append(f"publish n={outcome.n}: publisher told {outcome.error!r}, "
                                    f"neither applied nor not ({applied})")  # fmt: skip
