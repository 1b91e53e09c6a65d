"""The room wire format: what one worker packs, every other worker reads back as fields."""

from __future__ import annotations

import pytest

from asgi_rt.backends import Publication, RoomMessage
from asgi_rt.backends.envelope import pack_numbered, pack_room, unpack_numbered, unpack_room


def test_a_room_message_round_trips_with_any_ids() -> None:
    ids = ["3f2a", "a,b", "line\nbreak", "100%", "with space", ""]
    data = pack_room(b'{"n":1}', published_at=1700000000.25, excluded=ids)
    assert unpack_room(Publication("r", 7, "e1", data)) == RoomMessage(
        "r", 7, "e1", 1700000000.25, frozenset(ids), b'{"n":1}'
    )


def test_a_numbered_payload_round_trips() -> None:
    data = pack_room(b"[1]", published_at=1.0)
    payload = pack_numbered("e1", 42, data)
    assert unpack_numbered("r", payload) == Publication("r", 42, "e1", data)


def test_foreign_data_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="no header"):
        unpack_room(Publication("r", 1, "e", b"1.0 "))
    with pytest.raises(ValueError, match="invalid literal for int"):
        unpack_numbered("r", b"garbage")
