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

from ..backends import Backend, BackendUnavailable, Publication, Resync, make_backend
from ..backends.base import PositionStore, PresenceStore
from ..backends.envelope import pack_room
from ..connections.connection import Connection
from ..connections.manager import ConnectionManager
from ._authorize import Action, Authorize, Authorizer
from ._frames import room_notice
from ._membership import Membership
from ._presence import Presence, PresenceInfo, default_info
from ._recovery import Recovery

__all__ = ["RoomManager"]

logger = logging.getLogger("asgi_rt.rooms")


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
        self.backend = make_backend(backend, history_size=history_size)
        self._rooms: dict[str, dict[Connection, Membership]] = {}  # room -> local members
        lag = None if metrics is None else metrics.backplane_lag.labels()
        self._recovery = Recovery(self.backend, self._rooms, lag)
        self._joined: dict[Connection, set[str]] = {}  # for leaving every room at the end
        self._presence = self._make_presence(presence, presence_ttl, presence_info)
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
            resumed = since is not None and await self._recovery.replay(
                conn, room, membership, since, epoch
            )
            if announce:
                await self._announce_position(conn, room, membership, fresh=not resumed)
            await self._recovery.end_replay(conn, room, membership)
            if self._presence is not None:
                info = await self._presence.add(room, conn)
                await self._announce(room, {"type": "presence", "event": "join", "member": info})
        except BaseException:
            with anyio.CancelScope(shield=True), contextlib.suppress(BackendUnavailable):
                await self.leave(conn, room)  # a join that failed leaves nothing behind
            raise

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
            self._recovery.forget(room)
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
                        await self._recovery.resync(room)
            elif item.channel in self._rooms:
                await self._recovery.fill_gap(item)
                await self._recovery.deliver(item)

    async def _on_release(self, conn: Connection) -> None:
        for room in list(self._joined.get(conn, ())):
            await self.leave(conn, room)
        self._joined.pop(conn, None)
