"""RoomManager: rooms on top of ConnectionManager, fanned out through a backplane.

A publication goes to the backend once; every process's listener receives it once and
fans it out to its local members through their bounded queues (the same inline-send
path and overflow policy as ``broadcast``). Each room's publications carry ``seq``;
``join(..., since=seq)`` replays what a reconnecting client missed, in order and
without duplicates, or tells it that recovery is impossible.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Collection, Coroutine
from types import TracebackType
from typing import Any, Self

import anyio

from ..backends import Backend, BackendUnavailable, HistoryGap, Publication, Resync, make_backend
from ..backends.base import PositionStore, PresenceStore
from ..backends.envelope import pack_room, unpack_room
from ..connections.connection import Connection
from ..connections.manager import ConnectionManager
from ._authorize import Action, Authorize, Authorizer
from ._frames import room_frame, room_notice
from ._membership import Membership, Verdict
from ._presence import Presence, PresenceInfo, default_info

__all__ = ["RoomManager"]

logger = logging.getLogger("asgi_rt.rooms")

_REPLAY_ROUNDS = 3  # replays of one join before its member is left to catch up live


class RoomManager(ConnectionManager):
    """Rooms whose members may live on any worker, through a backplane.

    Members receive ``{"room": ..., "seq": ..., "data": ...}`` (JSON text) per publication;
    ``seq`` increases by one per publication in the room, on every worker alike.

    Args:
        backend: a :class:`~asgi_rt.backends.Backend` or a URL (``memory://``, default,
            one process; ``redis://host:port/db`` across workers and machines).
        history_size: publications kept per room for ``join(..., since=...)``.
        presence: keep who is in each room across workers (:meth:`presence`), and publish
            ``{"type": "presence", "event": "join" | "leave", "member": info}`` to the room.
        presence_ttl: seconds an entry lives unless its worker refreshes it (every ttl/3).
        presence_info: ``conn -> dict`` stored per member (default: id and plain meta).
        authorize: ``async (principal, action, room) -> bool``, asked before every
            :meth:`join` (``"join"``; an SSE stream: ``"subscribe"``, on resume too) and
            :meth:`publish_as` (``"publish"``); ``principal`` is the connection's
            ``scope["user"]``. Only ``True`` allows; a hook that raises is logged and
            denies. Denials raise :class:`~asgi_rt.Forbidden` (a refused :meth:`join`
            joins nothing) and are counted
            (``asgi_rt_authorization_denials_total{action}``). Default: everything allowed.
        **options: the :class:`ConnectionManager` options (queue bounds, overflow, ...).

    Use it as ``async with RoomManager(...) as rooms:`` (e.g. in the app's lifespan): that
    starts the backend and the listener, and on exit closes every connection (1001)
    and stops them.
    """

    def __init__(self, *, backend: Backend | str = "memory://", history_size: int = 1000,
                 presence: bool = False, presence_ttl: float = 30.0,
                 presence_info: PresenceInfo | None = None, authorize: Authorize | None = None,
                 **options: Any) -> None:  # fmt: skip
        super().__init__(**options)
        self._authorizer = Authorizer(authorize, options.get("metrics"))
        metrics = options.get("metrics")
        self._publish_seconds = None if metrics is None else metrics.backplane_publish.labels()
        self._lag_seconds = None if metrics is None else metrics.backplane_lag.labels()
        self.backend = make_backend(backend, history_size=history_size)
        self._rooms: dict[str, dict[Connection, Membership]] = {}  # room -> local members
        self._joined: dict[Connection, set[str]] = {}  # for leaving every room at the end
        self._presence = self._make_presence(presence, presence_ttl, presence_info)
        self._seen: dict[str, tuple[int, str]] = {}  # room -> last (seq, epoch) fanned out
        self._subscribed: set[str] = set()  # rooms the backplane delivers to this process

    async def __aenter__(self) -> Self:
        await self.backend.__aenter__()
        return await super().__aenter__()

    def _background_tasks(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        tasks = [*super()._background_tasks(), self._listen]
        if self._presence is not None:
            tasks.append(self._presence.refresh_forever)
        return tasks

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        try:
            await super().__aexit__(exc_type, exc, tb)
        finally:
            await self.backend.__aexit__(exc_type, exc, tb)

    def _needs_start(self) -> bool:
        return True  # the backend and its listener: without them nothing is delivered

    def rooms(self) -> list[str]:
        """Rooms with at least one member in this process."""
        return list(self._rooms)

    def members(self, room: str) -> frozenset[Connection]:
        """This process's members of ``room``."""
        return frozenset(self._rooms.get(room, ()))

    async def join(
        self, conn: Connection, room: str, *, since: int | None = None, epoch: str | None = None,
        announce: bool = False,
    ) -> None:  # fmt: skip
        """Add ``conn`` to ``room``; with ``since``, first replay what it missed after it.

        A resume names the position it continues from: ``since`` and the ``epoch`` it
        belongs to (every room frame, ``joined`` and ``recovery_failed`` carry both). When the
        history cannot fill the gap (trimmed; ``epoch`` not the room's current one, or
        missing while ``since`` > 0, so the position cannot be confirmed), the client gets
        ``{"type": "recovery_failed", "room", "reason", "epoch", "seq"}`` naming the position
        its stream now continues from, and then every later publication: it should re-sync
        from its source of truth.

        With ``announce``, the client is then sent ``{"type": "joined", "room": ..., "seq":
        ..., "epoch": ...}``: the position its stream starts after.
        """
        self._require_started("join")
        await self._authorizer.check_join(conn, room)
        if announce and not isinstance(self.backend, PositionStore):
            raise TypeError(f"announce needs a position: {type(self.backend).__name__} has none")
        joined = self._joined.setdefault(conn, set())
        if room in joined:
            return
        joined.add(room)
        # live publications are held while the history and the position are read, so that
        # the client gets them in order, once, and after what it was told
        membership = Membership(replaying=since is not None or announce)
        self._rooms.setdefault(room, {})[conn] = membership
        try:
            await self._subscribe(room)
            resumed = since is not None and await self._replay(conn, room, membership, since, epoch)
            if announce:
                await self._announce_position(conn, room, membership, fresh=not resumed)
            await self._end_replay(conn, room, membership)
            if self._presence is not None:
                info = await self._presence.add(room, conn)
                await self._announce(room, {"type": "presence", "event": "join", "member": info})
        except BaseException:
            with anyio.CancelScope(shield=True), contextlib.suppress(BackendUnavailable):
                await self.leave(conn, room)  # a join that failed leaves nothing behind
            raise

    async def _end_replay(self, conn: Connection, room: str, membership: Membership) -> None:
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
            await self._replay(conn, room, membership, membership.last_seq, membership.epoch)
        held, _ = membership.end_replay()
        for message, size in held:
            conn.deliver(message, size)
        logger.warning("room %r: member %s kept falling behind its replay", room, conn.id)

    async def _subscribe(self, room: str) -> None:
        """Subscribe the backplane unless this process already is; concurrent first joins
        each subscribe (idempotent), so none finds a room that listens nowhere."""
        if room not in self._subscribed:
            await self.backend.subscribe(room)
            if room in self._rooms:
                self._subscribed.add(room)

    async def _announce_position(
        self, conn: Connection, room: str, membership: Membership, *, fresh: bool
    ) -> None:
        """Send ``joined`` with the position this member's stream starts after: the room's
        current one when it did not resume (older publications are not its business), else
        the last one replayed to it (or the ``since`` it resumed at)."""
        seq, epoch = await self.position(room)
        if fresh or membership.epoch is None:
            membership.restart(epoch, max(membership.last_seq, seq))
        conn.deliver(*room_notice(room, "joined", {}, membership.last_seq, membership.epoch))

    async def leave(self, conn: Connection, room: str) -> None:
        """Remove ``conn`` from ``room``; the room goes when its last local member leaves."""
        joined = self._joined.get(conn)
        if joined is None or room not in joined:
            return
        joined.discard(room)
        if self._presence is not None and (info := await self._presence.remove(room, conn)):
            await self._announce(room, {"type": "presence", "event": "leave", "member": info})
        members = self._rooms.get(room)
        if members is None:
            return
        members.pop(conn, None)
        if not members:
            del self._rooms[room]
            self._seen.pop(room, None)
            self._subscribed.discard(room)
            await self.backend.unsubscribe(room)

    async def position(self, room: str) -> tuple[int, str | None]:
        """The room's last ``seq`` and its ``epoch`` on the backplane (``(0, None)`` before
        its first publication).

        Raises:
            TypeError: the backend cannot tell (it is no :class:`PositionStore`).
            BackendUnavailable: the backplane cannot be reached.
        """
        if not isinstance(self.backend, PositionStore):
            raise TypeError(f"{type(self.backend).__name__} cannot tell a room's position")
        return await self.backend.position(room)

    async def presence(self, room: str) -> dict[str, Any]:
        """Who is in ``room`` on every worker: ``{connection id: info}`` (needs ``presence=True``).

        Raises:
            RuntimeError: presence is not enabled.
            BackendUnavailable: the backplane cannot be reached.
        """
        if self._presence is None:
            raise RuntimeError("presence is off: RoomManager(presence=True) turns it on")
        return await self._presence.members(room)

    async def _announce(self, room: str, event: dict[str, Any]) -> None:
        try:
            await self.publish(room, event)
        except BackendUnavailable as exc:
            logger.warning("presence event for %r not published: %s", room, exc)

    def _make_presence(
        self, enabled: bool, ttl: float, info: PresenceInfo | None
    ) -> Presence | None:
        if not enabled:
            return None
        if not isinstance(self.backend, PresenceStore):
            raise TypeError(f"{type(self.backend).__name__} has no presence store")
        return Presence(
            self.backend, ttl=ttl, info=info or default_info, dumps=self._settings.dumps
        )

    async def publish(
        self, room: str, data: Any, *, exclude: Connection | Collection[Connection] | None = None,
        idempotency_key: str | None = None,
    ) -> Publication:  # fmt: skip
        """Publish ``data`` (JSON-encodable) to every member of ``room`` on every worker.

        Exactly once per member, in publish order per publisher. Members named in
        ``exclude`` (e.g. the sender) are skipped. A publish that repeats an
        ``idempotency_key`` the backend still remembers for ``room`` (default: 5 minutes)
        applies nothing and returns the first one's :class:`Publication`: retry an
        unknown outcome with the same key.

        Raises:
            PublishNotApplied: it certainly did not happen; no member gets it (retry).
            PublishOutcomeUnknown: it may have happened (retry with the same key).
            BackendUnavailable: the base of both: the backplane cannot take it now (a
                publish never hangs).
        """
        self._require_started("publish")
        excluded = [exclude] if isinstance(exclude, Connection) else list(exclude or ())
        body = self._settings.dumps(data).encode()
        packed = pack_room(body, published_at=time.time(), excluded=[c.id for c in excluded])
        started = time.perf_counter()
        publication = await self.backend.publish(room, packed, idempotency_key=idempotency_key)
        if self._publish_seconds is not None:
            self._publish_seconds.observe(time.perf_counter() - started)
        return publication

    async def publish_as(
        self, conn: Connection, room: str, data: Any, *,
        exclude: Connection | Collection[Connection] | None = None,
    ) -> Publication:  # fmt: skip
        """:meth:`publish` on behalf of ``conn`` (what a client sent), if ``authorize``
        lets its principal publish to ``room``.

        Raises:
            Forbidden: ``authorize`` refused (nothing was published).
            BackendUnavailable: as :meth:`publish`.
        """
        await self._authorizer.check(conn, Action.PUBLISH, room)
        return await self.publish(room, data, exclude=exclude)

    async def authorized(self, principal: Any, action: Action | str, room: str) -> bool:
        """Ask ``authorize`` directly (failsafe, counted), e.g. before opening a stream."""
        return await self._authorizer.allowed(principal, Action(action), room)

    async def _listen(self) -> None:
        async for item in self.backend.publications():
            if isinstance(item, Resync):
                for room in item.channels:
                    if room in self._rooms:
                        await self._resync(room)
            elif item.channel in self._rooms:
                await self._fill_gap(item)
                await self._deliver(item)

    async def _resync(self, room: str) -> None:
        """The backplane may have missed publications of ``room`` (it lost its subscription):
        compare the room's position with its members' and fill the gap now, so delivery
        resumes without waiting for the next publication."""
        if not isinstance(self.backend, PositionStore):
            return  # the next publication shows the gap
        try:
            seq, epoch = await self.backend.position(room)
        except BackendUnavailable as exc:
            logger.warning("room %r: cannot check for missed publications: %s", room, exc)
            return
        if epoch is None:
            return  # a backend that numbers without epochs: nothing to compare
        members = list(self._rooms.get(room, {}).items())
        stale = [(c, m) for c, m in members if m.epoch is not None and m.epoch != epoch]
        if stale:
            logger.warning("room %r: epoch changed to %s; telling %d member(s)",
                           room, epoch, len(stale))  # fmt: skip
            await self._restart(room, stale, "epoch changed", seq, epoch)
        behind = [m.last_seq for _, m in members if m.epoch == epoch and m.last_seq < seq]
        self._seen[room] = (seq, epoch)
        if not behind:
            return
        try:
            missed = await self.backend.history(room, min(behind), epoch)
        except (HistoryGap, BackendUnavailable) as gap:
            reason = gap.reason if isinstance(gap, HistoryGap) else "backplane unavailable"
            late = [(c, m) for c, m in members if m.epoch == epoch and m.last_seq < seq]
            await self._restart(room, late, reason, seq, epoch)
            return
        for publication in missed:
            await self._deliver(publication)

    async def _fill_gap(self, publication: Publication) -> None:
        """Deliver from history what this process missed (e.g. while the backplane
        listener reconnected), or tell the room's members that it cannot. A change of
        epoch is not a gap: each member finds out it is stale when it is delivered to."""
        room = publication.channel
        last, epoch = self._seen.get(room, (0, publication.epoch))
        self._seen[room] = (publication.seq, publication.epoch)
        if last == 0 or epoch != publication.epoch or publication.seq <= last + 1:
            return
        try:
            missed = await self.backend.history(room, last, epoch)
        except (HistoryGap, BackendUnavailable) as gap:
            reason = gap.reason if isinstance(gap, HistoryGap) else "backplane unavailable"
            logger.warning("room %r: publications lost (%s); telling members", room, reason)
            members = list(self._rooms.get(room, {}).items())
            await self._restart(room, members, reason, publication.seq - 1, publication.epoch)
            return
        for missing in missed:
            if missing.seq < publication.seq:
                await self._deliver(missing)

    async def _deliver(self, publication: Publication) -> None:
        """Fan ``publication`` out; members in another epoch are told what they lost and
        restarted in this one before anything else reaches them."""
        stale = self._fan_out(publication)
        if stale:
            room = publication.channel
            logger.warning("room %r: epoch changed to %s; telling %d member(s)",
                           room, publication.epoch, len(stale))  # fmt: skip
            await self._restart(room, stale, "epoch changed", publication.seq - 1,
                                publication.epoch)  # fmt: skip
            self._fan_out(publication, only=stale)

    def _fan_out(
        self, publication: Publication, only: list[tuple[Connection, Membership]] | None = None
    ) -> list[tuple[Connection, Membership]]:
        """Deliver to every local member (or ``only`` those); return the stale ones."""
        members = self._rooms.get(publication.channel)
        if not members:
            return []
        room_message = unpack_room(publication)
        excluded = room_message.excluded
        if self._lag_seconds is not None and only is None:
            self._lag_seconds.observe(max(0.0, time.time() - room_message.published_at))
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

    async def _restart(
        self, room: str, members: list[tuple[Connection, Membership]], reason: str,
        seq: int, epoch: str,
    ) -> None:  # fmt: skip
        """Tell ``members`` they lost publications (``recovery_failed``) and continue them
        in ``epoch``: from its start when the history still holds all of it (then they get
        it), else after ``seq``."""
        try:
            kept = await self.backend.history(room, 0, epoch)
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

    async def _replay(self, conn: Connection, room: str, membership: Membership,
                      since: int, epoch: str | None) -> bool:  # fmt: skip
        """Deliver the history after ``since``; ``False`` (and ``recovery_failed``) if it
        cannot, or if the position cannot be confirmed (``since`` > 0 with no epoch)."""
        try:
            if epoch is None and since > 0:
                raise HistoryGap(f"seq {since} of {room!r} names no epoch", reason="unknown epoch")
            missed = await self.backend.history(room, since, epoch)
        except HistoryGap as gap:
            await self._refuse_resume(conn, room, membership, gap.reason)
            return False
        membership.restart(epoch or membership.epoch, max(membership.last_seq, since))
        for publication in missed:
            if membership.accepts_replayed(publication.seq, publication.epoch):
                conn.deliver(*room_frame(unpack_room(publication)))
        return True

    async def _refuse_resume(
        self, conn: Connection, room: str, membership: Membership, reason: str
    ) -> None:
        """``recovery_failed`` naming where the member's stream continues: the room's
        current position (or, without a position store, wherever the next one starts)."""
        if not isinstance(self.backend, PositionStore):
            membership.restart(None, 0)
            await conn.send({"type": "recovery_failed", "room": room, "reason": reason})
            return
        seq, epoch = await self.backend.position(room)
        await self._restart(room, [(conn, membership)], reason, seq, epoch or "")

    async def _on_release(self, conn: Connection) -> None:
        for room in list(self._joined.get(conn, ())):
            await self.leave(conn, room)
        self._joined.pop(conn, None)
