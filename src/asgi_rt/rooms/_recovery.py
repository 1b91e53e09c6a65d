"""Delivery and recovery of a room's publications to this process's members.

The fan-out of each publication, and what keeps every member's stream whole: the replay
of a resuming join (and its bounded re-runs while live publications are held), filling
a gap the backplane listener left, re-syncing after the backplane lost a subscription,
and restarting members in a new epoch with ``recovery_failed``. Owned by one
:class:`~asgi_rt.RoomManager`, whose membership table it reads.
"""

from __future__ import annotations

import logging
import time

from .._families import HistogramChild
from ..backends import Backend, BackendUnavailable, HistoryGap, Publication
from ..backends.base import PositionStore
from ..backends.envelope import unpack_room
from ..connections.connection import Connection
from ._frames import room_frame, room_notice
from ._membership import Membership, Verdict

__all__ = ["Recovery"]

logger = logging.getLogger("asgi_rt.rooms")

_REPLAY_ROUNDS = 3  # replays of one join before its member is left to catch up live
_REPLAY_PACE = 8  # queued messages at which a replay waits for its member's writer


class Recovery:
    """Fan-out and recovery for the rooms of one manager.

    Args:
        backend: the manager's backplane.
        members: the manager's table, room -> local members and their membership (read,
            never changed here).
        lag: the ``backplane_lag_seconds`` child, or ``None`` without metrics.
    """

    def __init__(
        self, backend: Backend, members: dict[str, dict[Connection, Membership]],
        lag: HistogramChild | None,
    ) -> None:  # fmt: skip
        self._backend, self._members, self._lag = backend, members, lag
        self._seen: dict[str, tuple[int, str]] = {}  # room -> last (seq, epoch) fanned out

    def forget(self, room: str) -> None:
        """The room has no local member any more."""
        self._seen.pop(room, None)

    async def end_replay(self, conn: Connection, room: str, membership: Membership) -> None:
        """Deliver what was held during the replay; if that was not a clean continuation
        (more than the buffer arrived, or the epoch changed meanwhile), replay again from
        where the member now is, a bounded number of times."""
        for _ in range(_REPLAY_ROUNDS):
            held, clean = membership.end_replay()
            for message, size in held:
                conn.deliver(message, size)
            if clean:
                return
            membership.hold()
            await self.replay(conn, room, membership, membership.last_seq, membership.epoch)
        held, clean = membership.end_replay()
        for message, size in held:
            conn.deliver(message, size)
        if not clean:  # still behind after every round: tell it where it goes on from
            logger.warning("room %r: member %s kept falling behind its replay", room, conn.id)
            await self.refuse_resume(conn, room, membership, "too far behind")

    async def resync(self, room: str) -> None:
        """The backplane may have missed publications of ``room`` (it lost its subscription):
        compare the room's position with its members' and fill the gap now, so delivery
        resumes without waiting for the next publication."""
        if not isinstance(self._backend, PositionStore):
            return  # the next publication shows the gap
        try:
            seq, epoch = await self._backend.position(room)
        except BackendUnavailable as exc:
            logger.warning("room %r: cannot check for missed publications: %s", room, exc)
            return
        if epoch is None:
            return  # a backend that numbers without epochs: nothing to compare
        members = list(self._members.get(room, {}).items())
        stale = [(c, m) for c, m in members if m.epoch is not None and m.epoch != epoch]
        # ahead of the room in its own epoch: the numbering went back (Redis restarted from
        # an older snapshot); the seqs it had will be reused for other publications. Read
        # before the stale are restarted: their replay may run past ``seq`` meanwhile.
        ahead = [(c, m) for c, m in members if m.epoch == epoch and m.last_seq > seq]
        if stale:
            logger.warning("room %r: epoch changed to %s; telling %d member(s)",
                           room, epoch, len(stale))  # fmt: skip
            await self.restart(room, stale, "epoch changed", seq, epoch)
        if ahead:
            logger.warning("room %r: numbering went back to %d; telling %d member(s)",
                           room, seq, len(ahead))  # fmt: skip
            await self.restart(room, ahead, "rolled back", seq, epoch, replay=False)
        if room not in self._members:
            return  # every member left while the position was read: nothing to remember
        behind = [m.last_seq for _, m in members
                  if m.epoch == epoch and m.last_seq < seq]  # fmt: skip
        self._seen[room] = (seq, epoch)
        if not behind:
            return
        try:
            missed = await self._backend.history(room, min(behind), epoch)
        except (HistoryGap, BackendUnavailable) as gap:
            reason = gap.reason if isinstance(gap, HistoryGap) else "backplane unavailable"
            late = [(c, m) for c, m in members if m.epoch == epoch and m.last_seq < seq]
            await self.restart(room, late, reason, seq, epoch)
            return
        for publication in missed:
            await self.deliver(publication)

    async def fill_gap(self, publication: Publication) -> None:
        """Deliver from history what this process missed (e.g. while the backplane
        listener reconnected), or tell the room's members that it cannot. A change of
        epoch is not a gap: each member finds out it is stale when it is delivered to."""
        room = publication.channel
        last, epoch = self._seen.get(room) or self._start_of(room, publication.epoch)
        self._seen[room] = (publication.seq, publication.epoch)
        if last == 0 or epoch != publication.epoch or publication.seq <= last + 1:
            return
        try:
            missed = await self._backend.history(room, last, epoch)
        except (HistoryGap, BackendUnavailable) as gap:
            reason = gap.reason if isinstance(gap, HistoryGap) else "backplane unavailable"
            logger.warning("room %r: publications lost (%s); telling members", room, reason)
            members = list(self._members.get(room, {}).items())
            await self.restart(room, members, reason, publication.seq - 1, publication.epoch)
            return
        for missing in missed:
            if missing.seq < publication.seq:
                await self.deliver(missing)

    def _start_of(self, room: str, epoch: str) -> tuple[int, str]:
        """Where the room's members stand before the first publication this process sees
        (each took the room's position when it joined): the earliest of those in
        ``epoch``, so a publication the listener missed before it was subscribed is
        found as a gap like any other."""
        members = self._members.get(room, {}).values()
        return min((m.last_seq for m in members if m.epoch == epoch), default=0), epoch

    async def deliver(self, publication: Publication) -> None:
        """Fan ``publication`` out; members in another epoch are told what they lost and
        restarted in this one before anything else reaches them."""
        stale = self.fan_out(publication)
        if stale:
            room = publication.channel
            logger.warning("room %r: epoch changed to %s; telling %d member(s)",
                           room, publication.epoch, len(stale))  # fmt: skip
            await self.restart(room, stale, "epoch changed", publication.seq - 1,
                                publication.epoch)  # fmt: skip
            self.fan_out(publication, only=stale)

    def fan_out(
        self, publication: Publication, only: list[tuple[Connection, Membership]] | None = None
    ) -> list[tuple[Connection, Membership]]:
        """Deliver to every local member (or ``only`` those); return the stale ones."""
        members = self._members.get(publication.channel)
        if not members:
            return []
        room_message = unpack_room(publication)
        excluded = room_message.excluded
        if self._lag is not None and only is None:
            self._lag.observe(max(0.0, time.time() - room_message.published_at))
        message, size = room_frame(room_message)
        seq, epoch, stale = publication.seq, publication.epoch, []
        for conn, membership in only or tuple(members.items()):
            if excluded and conn.id in excluded:
                continue
            verdict = membership.accepts(seq, epoch, message, size)
            if verdict is Verdict.DELIVER:
                conn.deliver(message, size)
            elif verdict is Verdict.STALE:
                stale.append((conn, membership))
        return stale

    async def restart(
        self, room: str, members: list[tuple[Connection, Membership]], reason: str,
        seq: int, epoch: str, *, replay: bool = True,
    ) -> None:  # fmt: skip
        """Tell ``members`` they lost publications (``recovery_failed``) and continue them
        in ``epoch``: from its start when the history still holds all of it (then they get
        it) and ``replay`` allows, else after ``seq``."""
        try:
            kept = await self._backend.history(room, 0, epoch) if replay else None
        except (HistoryGap, BackendUnavailable):
            kept = None
        start = seq if kept is None else 0
        notice = room_notice(room, "recovery_failed", {"reason": reason}, start, epoch)
        frames = [room_frame(unpack_room(p)) for p in kept or ()]
        for conn, membership in members:
            membership.restart(epoch, start)
            conn.deliver(*notice)
            for (message, size), publication in zip(frames, kept or (), strict=True):
                if membership.accepts_replayed(publication.seq, publication.epoch):
                    conn.deliver(message, size)

    async def replay(self, conn: Connection, room: str, membership: Membership,
                      since: int, epoch: str | None) -> bool:  # fmt: skip
        """Deliver the history after ``since``; ``False`` (and ``recovery_failed``) if it
        cannot, or if the position cannot be confirmed (``since`` > 0 with no epoch)."""
        try:
            if epoch is None and since > 0:
                raise HistoryGap(f"seq {since} of {room!r} names no epoch", reason="unknown epoch")
            missed = await self._backend.history(room, since, epoch)
        except HistoryGap as gap:
            await self.refuse_resume(conn, room, membership, gap.reason)
            return False
        membership.restart(epoch or membership.epoch, max(membership.last_seq, since))
        for publication in missed:
            if membership.accepts_replayed(publication.seq, publication.epoch):
                conn.deliver(*room_frame(unpack_room(publication)))
                if conn.queued >= _REPLAY_PACE:  # go at the reader's pace, not past the
                    await conn.wait_flushed()  # queue bound (live ones are held meanwhile)
        return True

    async def refuse_resume(
        self, conn: Connection, room: str, membership: Membership, reason: str
    ) -> None:
        """``recovery_failed`` naming where the member's stream continues: the room's
        current position (or, without a position store, wherever the next one starts)."""
        if not isinstance(self._backend, PositionStore):
            membership.restart(None, 0)
            await conn.send({"type": "recovery_failed", "room": room, "reason": reason})
            return
        seq, epoch = await self._backend.position(room)
        await self.restart(room, [(conn, membership)], reason, seq, epoch or "")
