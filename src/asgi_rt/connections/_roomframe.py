"""The frame a room's members receive, built once per publication and shared by all."""

from __future__ import annotations

import json

from ..backends.base import Publication
from ._encode import Frame

__all__ = ["RoomFrame", "room_frame"]


class RoomFrame(Frame):
    """A ``websocket.send`` message that also says which publication it carries.

    Transports that frame messages themselves (SSE's ``id:`` field) read ``room``, ``seq``
    and ``epoch`` instead of parsing the text, and keep their encoding with that position in
    ``cache`` (``plain`` is the encoding without it), once per publication.
    """

    __slots__ = ("cache", "epoch", "room", "seq")

    def __init__(self, text: str, room: str, seq: int, epoch: str) -> None:
        super().__init__(type="websocket.send", text=text)
        self.room, self.seq, self.epoch = room, seq, epoch
        self.cache: bytes | None = None


def room_frame(publication: Publication, body: bytes) -> tuple[RoomFrame, int]:
    """``{"room", "seq", "data": <body>}`` for ``publication`` (``body`` is its payload,
    without the header) as a shared message, and its size."""
    name = json.dumps(publication.channel, ensure_ascii=False)
    text = f'{{"room":{name},"seq":{publication.seq},"data":{body.decode()}}}'
    frame = RoomFrame(text, publication.channel, publication.seq, publication.epoch)
    return frame, len(text.encode())
