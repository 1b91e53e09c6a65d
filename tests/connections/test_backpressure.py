"""The bounded outbox: every policy keeps its bounds, and survivors keep publish order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_rt import ConnectionManager, RateLimit
from asgi_rt.connections.backpressure import Outbox, Overflow, Pushed


def drain(box: Outbox) -> list[object]:
    out = []
    while (message := box.pop()) is not None:
        out.append(message)
    return out


def test_disconnect_reports_overflow_and_leaves_the_queue_alone() -> None:
    box = Outbox(max_messages=2, max_bytes=None, overflow=Overflow.DISCONNECT)
    assert [box.push(n, 1) for n in range(3)] == [Pushed.QUEUED, Pushed.QUEUED, Pushed.OVERFLOW]
    assert drain(box) == [0, 1]


def test_drop_oldest_evicts_from_the_front() -> None:
    box = Outbox(max_messages=2, max_bytes=None, overflow=Overflow.DROP_OLDEST)
    for n in range(5):
        box.push(n, 1)
    assert drain(box) == [3, 4]


def test_byte_bound_counts_payload_sizes() -> None:
    box = Outbox(max_messages=10, max_bytes=10, overflow=Overflow.DROP_OLDEST)
    box.push("a", 6)
    assert box.push("b", 6) is Pushed.DROPPED_OLDEST
    assert box.dropped == 1
    assert box.push("huge", 11) is Pushed.DROPPED_NEWEST  # could never fit
    assert drain(box) == ["b"]


def test_coalesce_replaces_in_place_and_updates_bytes() -> None:
    box = Outbox(max_messages=4, max_bytes=None, overflow=Overflow.COALESCE)
    box.push("a1", 2, "a")
    box.push("b1", 2, "b")
    assert box.push("a2", 5, "a") is Pushed.COALESCED
    assert box.nbytes == 7
    assert drain(box) == ["a2", "b1"]
    assert box.push("a3", 2, "a") is Pushed.QUEUED  # the popped key is forgotten


def test_a_coalesced_value_never_breaks_the_byte_bound() -> None:
    box = Outbox(max_messages=4, max_bytes=4, overflow=Overflow.COALESCE)
    box.push("a1", 1, "a")
    box.push("b1", 1, "b")
    assert box.push("a-huge", 5, "a") is Pushed.DROPPED_NEWEST  # could never fit: a1 stays
    assert box.push("a2", 4, "a") is Pushed.COALESCED  # fits only once b1 is evicted
    assert box.dropped == 1
    assert box.nbytes == 4
    assert drain(box) == ["a2"]


def test_clear_reports_what_was_discarded() -> None:
    box = Outbox(max_messages=4, max_bytes=None, overflow=Overflow.DROP_NEWEST)
    box.push(1, 1)
    box.push(2, 1)
    assert box.clear() == 2
    assert len(box) == 0
    assert box.nbytes == 0


@given(
    policy=st.sampled_from(list(Overflow)),
    max_messages=st.integers(1, 6),
    max_bytes=st.none() | st.integers(1, 40),
    ops=st.lists(st.tuples(st.integers(0, 12), st.none() | st.sampled_from("abc")), max_size=60),
)
def test_bounds_and_order_hold_for_every_policy(
    policy: Overflow, max_messages: int, max_bytes: int | None, ops: list[tuple[int, str | None]]
) -> None:
    box = Outbox(max_messages=max_messages, max_bytes=max_bytes, overflow=policy)
    for seq, (size, key) in enumerate(ops):
        box.push(seq, size, key)
        assert len(box) <= max_messages
        assert max_bytes is None or box.nbytes <= max_bytes
    survivors = drain(box)
    assert survivors == sorted(survivors) or policy is Overflow.COALESCE
    assert len(set(survivors)) == len(survivors)
    assert box.nbytes == 0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"queue_size": 0}, ValueError),
        ({"queue_size": 1.5}, TypeError),
        ({"queue_bytes": 0}, ValueError),
        ({"overflow": "drop_oldest"}, TypeError),
        ({"send_timeout": 0}, ValueError),
        ({"close_timeout": -1}, ValueError),
        ({"max_message_size": 0}, ValueError),
        ({"rate_limit": (5, 5)}, TypeError),
        ({"max_invalid_frames": 0}, ValueError),
    ],
)
def test_bad_options_fail_at_construction(
    kwargs: dict[str, object], error: type[Exception]
) -> None:

    with pytest.raises(error):
        ConnectionManager(**kwargs)  # type: ignore[arg-type]


def test_rate_limit_validates_its_numbers() -> None:
    with pytest.raises(ValueError, match="per_second must be > 0"):
        RateLimit(per_second=0, burst=1)
    with pytest.raises(ValueError, match="burst must be >= 1"):
        RateLimit(per_second=1, burst=0)
