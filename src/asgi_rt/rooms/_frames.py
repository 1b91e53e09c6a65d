"""The frames a room's members receive, built once per publication and shared by all."""

from __future__ import annotations

from typing import Any

from ..backends.envelope import RoomMessage
from ..connections._encode import Frame, compact_dumps

__all__ = ["RoomFrame", "room_frame", "room_notice"]


class RoomFrame(Frame):
    """A ``websocket.send`` message that also says which position in a room it carries.

    Transports that frame messages themselves (SSE's ``id:`` field) read ``room``, ``seq``
    and ``epoch`` instead of parsing the text.
    """

    __slots__ = ("epoch", "room", "seq")

    def __init__(self, text: str, room: str, seq: int, epoch: str) -> None:
        super().__init__(type="websocket.send", text=text)
        self.room, self.seq, self.epoch = room, seq, epoch


def room_frame(message: RoomMessage) -> tuple[RoomFrame, int]:
    """``{"room", "seq", "epoch", "data": <body>}`` for ``message`` as a shared message, and
    its size.

    The encoder builds the fields; the body, JSON the same encoder made at publish, goes in
    as it is. Re-decoding it to encode it whole cost 2.6 us per publication over the old
    f-string (this: 1.4 us over it) and would let a custom ``dumps``'s formatting change.
    """
    head = compact_dumps({"room": message.room, "seq": message.seq, "epoch": message.epoch})
    text = f'{head[:-1]},"data":{message.body.decode()}}}'
    frame = RoomFrame(text, message.room, message.seq, message.epoch)
    return frame, len(text) if text.isascii() else len(text.encode())


def room_notice(
    room: str, kind: str, fields: dict[str, Any], seq: int, epoch: str | None
) -> tuple[RoomFrame, int]:
    """``{"type": kind, "room", ..., "seq", "epoch"}``: a notice that names the position the
    member's stream continues after (``joined``, ``recovery_failed``); on SSE its id."""
    text = compact_dumps({"type": kind, "room": room, **fields, "seq": seq, "epoch": epoch})
    return RoomFrame(text, room, seq, epoch or ""), len(text.encode())
