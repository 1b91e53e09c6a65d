"""Direct tallies read at scrape time equal what the wrapped path records frame by frame,
for generated sequences of sizes (bucket edges included), types, routes and connection ends."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from asgi_rt import Metrics
from asgi_rt._directframes import DirectTally
from asgi_rt.metrics import SIZE_BUCKETS

from ._stack import parse

sizes = st.one_of(
    st.sampled_from(
        [0, *SIZE_BUCKETS, *(b + 1 for b in SIZE_BUCKETS), *(b - 1 for b in SIZE_BUCKETS)]
    ),
    st.integers(0, 1 << 25),
)
frames = st.lists(st.tuples(st.integers(0, 3), sizes, st.booleans(), st.booleans()), max_size=60)


@settings(max_examples=300, deadline=None)
@given(frames)
def test_tally_equals_wrapped(seq: list[tuple[int, int, bool, bool]]) -> None:
    wrapped, direct = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    tallies: dict[int, DirectTally] = {}
    for conn, size, text, end in seq:
        route = f"/r{conn % 2}"
        wrapped.messages.labels(route, "out", "text" if text else "binary").inc()
        wrapped.message_size.labels(route, "out").observe(size)
        wrapped.send_duration.labels(route).observe(0.0)
        tally = tallies.get(conn)
        if tally is None:
            opened = direct.direct_tally(route)
            assert opened is not None  # in-process metrics
            tally = tallies[conn] = opened
        tally.add(size, text)
        if end:  # the connection ended: what it sent stays counted
            del tallies[conn]
    a = parse(generate_latest(wrapped.registry).decode())
    b = parse(generate_latest(direct.registry).decode())
    assert {k: v for k, v in a.items() if v} == {k: v for k, v in b.items() if v}
