"""The room envelope: the one module that packs and unpacks what crosses a backplane.

Not to be confused with :mod:`asgi_rt.wire`, the client wire protocol (what browsers see).
This is the backplane format between workers.

A :class:`~asgi_rt.backends.base.Backend` treats a publication's ``data`` as opaque bytes:
it numbers, keeps and delivers them. What a :class:`~asgi_rt.RoomManager` puts in them is
written down here, as data (:class:`RoomMessage`), and nowhere else:

- ``pack_room``/``unpack_room``: ``data`` = ``"<publish time> <excluded ids>\\n<body>"``,
  the time in seconds since the epoch (6 decimals), the ids comma-separated and
  percent-escaped (an id with ``,``, ``%``, a space or a newline stays one id), the body
  the payload's JSON text.
- ``pack_numbered``/``unpack_numbered``: ``"<epoch> <seq> <data>"``, one numbered
  publication as a pub/sub message (what ``RedisBackend``'s publish script sends; a
  backend whose pub/sub carries no headers of its own can use the same).

A new backend implements the ``Backend`` protocol and nothing else: it never looks inside
``data``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from .base import Publication

__all__ = ["RoomMessage", "pack_numbered", "pack_room", "unpack_numbered", "unpack_room"]

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:~")


@dataclass(frozen=True, slots=True)
class RoomMessage:
    """One room publication, every field a member's worker needs to deliver it.

    Attributes:
        room: the room (the publication's channel).
        seq: its number in the room.
        epoch: the room's history generation.
        published_at: when it was published (``time.time()`` on the publishing worker).
        excluded: ids of the connections that must not receive it (e.g. its sender).
        body: the payload's JSON text, as the ``data`` field of the member's frame.
    """

    room: str
    seq: int
    epoch: str
    published_at: float
    excluded: frozenset[str]
    body: bytes


def pack_room(body: bytes, *, published_at: float, excluded: Iterable[str] = ()) -> bytes:
    """The opaque ``data`` a RoomManager publishes for ``body``."""
    ids = ",".join(_escape(conn_id) for conn_id in excluded)
    return f"{published_at:.6f} {ids}\n".encode() + body


def unpack_room(publication: Publication) -> RoomMessage:
    """The fields of a publication a RoomManager made (``ValueError`` if it did not)."""
    header, newline, body = publication.data.partition(b"\n")
    published_at, _, ids = header.decode().partition(" ")
    if not newline:
        raise ValueError(f"not a room message on {publication.channel!r}: no header")
    excluded = frozenset(unquote(i) if "%" in i else i for i in ids.split(",")) if ids else _NONE
    return RoomMessage(publication.channel, publication.seq, publication.epoch,
                       float(published_at), excluded, body)  # fmt: skip


def pack_numbered(epoch: str, seq: int, data: bytes) -> bytes:
    """One numbered publication as a single pub/sub payload."""
    return f"{epoch} {seq} ".encode() + data


def unpack_numbered(channel: str, payload: bytes) -> Publication:
    """The publication in a ``pack_numbered`` payload (``ValueError`` if it is not one)."""
    epoch, _, rest = payload.partition(b" ")
    seq, _, data = rest.partition(b" ")
    return Publication(channel, int(seq), epoch.decode(), data)


_NONE: frozenset[str] = frozenset()


def _escape(conn_id: str) -> str:
    return conn_id if _SAFE.issuperset(conn_id) else quote(conn_id, safe="")
