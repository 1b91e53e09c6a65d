"""The frame a room's members receive, built once per publication and shared by all."""

from __future__ import annotations

import json

from ._encode import Frame

__all__ = ["RoomFrame", "room_frame"]


class RoomFrame(Frame):
    """A ``websocket.send`` message that also says which publication it carries.

    Transports that frame messages themselves (SSE's ``id:`` field) read ``room``, ``seq``
    and ``epoch`` instead of parsing the text, and may keep their encoding in ``cache``
    so that it, too, is built once per publication rather than once per member.
    """

    __slots__ = ("cache", "epoch", "room", "seq")

    def __init__(self, text: str, room: str, seq: int, epoch: str) -> None:
        super().__init__(text)
        self.room, self.seq, self.epoch = room, seq, epoch
        self.cache: bytes | None = None


def room_frame(room: str, seq: int, epoch: str, body: bytes) -> tuple[RoomFrame, int]:
    """``{"room": room, "seq": seq, "data": <body>}`` as a shared message, and its size."""
    name = json.dumps(room, ensure_ascii=False)
    text = f'{{"room":{name},"seq":{seq},"data":{body.decode()}}}'
    return RoomFrame(text, room, seq, epoch), len(text.encode())
