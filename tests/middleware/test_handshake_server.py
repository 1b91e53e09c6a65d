"""HandshakeMiddleware on the wire: raw handshakes against a real uvicorn, so the status
codes and headers checked are what travels over the socket."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import HandshakeMiddleware

from .._rawclient import RawClient
from .._server import RunningServer, wait_for

pytestmark = pytest.mark.server

ALLOWED = ["https://app.example.com", "https://*.example.com", "http://localhost:3000"]
IMPLS = ["websockets", "wsproto"]


class Harness:
    def __init__(self, ws_impl: str, **options: object) -> None:
        self.invocations = 0
        self.open = 0
        self.stats: Counter[str] = Counter()

        async def endpoint(websocket: WebSocket) -> None:
            self.invocations += 1
            await websocket.accept()
            await websocket.send_text(f"subprotocol={websocket.scope.get('subprotocols')}")
            self.open += 1
            try:
                await websocket.receive()
            finally:
                self.open -= 1

        app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
        options = {"allowed_origins": ALLOWED, "stats": self.stats, **options}
        self.app = HandshakeMiddleware(app, **options)  # type: ignore[arg-type]
        self.server = RunningServer(self.app, ws=ws_impl)
        self.server.start()

    def handshake(self, headers: dict[str, str] | list[tuple[str, str]]) -> RawClient:
        return RawClient(self.server.port, "/ws", rcvbuf=None, headers=headers)


@pytest.fixture(scope="module", params=IMPLS)
def origin_harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    harness = Harness(request.param)
    yield harness
    harness.server.stop()


ORIGINS = [
    # (Origin header, accepted?)
    ("https://app.example.com", True),
    ("https://APP.Example.COM", True),  # host is case-insensitive
    ("HTTPS://app.example.com", True),  # so is the scheme
    ("https://app.example.com:443", True),  # default port == no port
    ("https://chat.example.com", True),  # wildcard subdomain
    ("https://a.b.example.com", True),  # deeper subdomain
    ("http://localhost:3000", True),
    ("https://example.com", False),  # the wildcard never matches the apex
    ("https://example.com.evil.com", False),
    ("https://evilexample.com", False),
    ("https://app.example.com.", False),  # trailing dot: a different origin
    ("http://app.example.com", False),  # scheme compared exactly
    ("wss://app.example.com", False),
    ("https://app.example.com:8443", False),  # port compared exactly
    ("https://chat.example.com:444", False),
    ("http://localhost:3001", False),
    ("http://localhost", False),
    ("https://app.example.com/", False),  # a path is malformed
    ("https://app.example.com/path", False),
    ("https://user@app.example.com", False),  # userinfo
    ("https://user:pw@app.example.com", False),
    ("https://app.example.com:abc", False),
    ("https://app.example.com:99999", False),
    ("https://app.example.com:0", False),
    ("https://app.example.com?x=1", False),
    ("https://app.example.com#f", False),
    ("app.example.com", False),  # no scheme
    ("//app.example.com", False),
    ("https://", False),
    ("null", False),
    ("", False),
    ("*", False),
    ("https://*.example.com", False),
    ("https://app..example.com", False),
    ("https://-bad.example.com", False),
    ("https://xn--bcher-kva.example.com", True),  # IDNA-encoded subdomain
    ("https://[::1]", False),
]


@pytest.mark.parametrize(("origin", "accepted"), ORIGINS)
def test_origin_table(origin_harness: Harness, origin: str, accepted: bool) -> None:
    before = origin_harness.invocations
    client = origin_harness.handshake({"Origin": origin})
    try:
        assert client.status == (101 if accepted else 403)
        if not accepted:
            assert client.body() == b"origin not allowed"
            assert origin_harness.invocations == before
    finally:
        client.close()


def test_missing_origin_is_refused(origin_harness: Harness) -> None:
    client = origin_harness.handshake({})
    client.close()
    assert client.status == 403


def test_two_origin_headers_are_refused(origin_harness: Harness) -> None:
    headers = [("Origin", "https://app.example.com"), ("Origin", "https://evil.com")]
    client = origin_harness.handshake(headers)
    client.close()
    assert client.status == 403


def test_rejections_are_counted_by_reason(origin_harness: Harness) -> None:
    before = origin_harness.stats["origin"]
    origin_harness.handshake({"Origin": "https://evil.com"}).close()
    assert origin_harness.stats["origin"] == before + 1


# Printable ASCII only on the wire: uvicorn's `websockets` implementation itself fails the
# handshake (500, logged) on any non-ASCII header byte, before an ASGI app runs. Arbitrary
# text is fed to the middleware in process instead (test_handshake.py).
_header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60
).map(str.strip)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(origin=st.one_of(_header_text, st.builds("https://{}".format, _header_text)))
def test_generated_origins_never_break_the_server(origin_harness: Harness, origin: str) -> None:
    client = origin_harness.handshake({"Origin": origin})
    client.close()
    assert client.status in {101, 403}
    assert origin_harness.server.log.records == []
    assert origin_harness.server.loop_errors == []


@pytest.mark.parametrize("ws_impl", [*IMPLS, "websockets-sansio"])
def test_wrong_version_never_reaches_the_app(ws_impl: str) -> None:
    # Every uvicorn implementation validates Sec-WebSocket-Version itself and answers 400
    # before any ASGI app runs; the middleware's own 426 (with the supported version) is
    # for servers that pass such requests on, and is tested in process.
    harness = Harness(ws_impl, allow_missing_origin=True)
    try:
        client = harness.handshake({"Sec-WebSocket-Version": "8"})
        client.close()
        assert client.status in {400, 426}
        assert harness.invocations == 0
    finally:
        harness.server.stop()


@pytest.mark.parametrize("ws_impl", IMPLS)
def test_subprotocol_negotiation_and_requirement(ws_impl: str) -> None:
    harness = Harness(ws_impl, allow_missing_origin=True, subprotocols=["v2.chat", "v1.chat"],
                      require_subprotocol=True)  # fmt: skip
    try:
        ok = harness.handshake({"Sec-WebSocket-Protocol": "other, v1.chat, v2.chat"})
        assert ok.status == 101
        assert ok.headers["sec-websocket-protocol"] == "v1.chat"  # the client's first supported
        ok.close()
        refused = harness.handshake({"Sec-WebSocket-Protocol": "other"})
        refused.close()
        assert refused.status == 400
        none_offered = harness.handshake({})
        none_offered.close()
        assert none_offered.status == 400
        assert harness.stats["subprotocol"] == 2
        assert harness.invocations == 1
    finally:
        harness.server.stop()


@pytest.mark.parametrize("ws_impl", IMPLS)
def test_global_limit_503_and_slot_freed_on_close(ws_impl: str) -> None:
    harness = Harness(ws_impl, allow_missing_origin=True, max_connections=3)
    try:
        held = [harness.handshake({}) for _ in range(3)]
        assert [c.status for c in held] == [101] * 3
        wait_for(lambda: harness.open == 3)
        extra = harness.handshake({})
        extra.close()
        assert extra.status == 503
        assert harness.invocations == 3
        held.pop().reset()
        wait_for(lambda: harness.app.limiter.open == 2, what="slot released")
        again = harness.handshake({})
        assert again.status == 101
        for client in [*held, again]:
            client.close()
    finally:
        harness.server.stop()


@pytest.mark.parametrize("ws_impl", IMPLS)
def test_per_client_limit_429_behind_a_trusted_proxy(ws_impl: str) -> None:
    harness = Harness(ws_impl, allow_missing_origin=True, max_connections_per_client=2,
                      client_ip_header="X-Forwarded-For")  # fmt: skip
    try:
        alice = {"X-Forwarded-For": "203.0.113.9, 198.51.100.1"}  # our proxy appended the last
        held = [harness.handshake(alice) for _ in range(2)]
        third = harness.handshake(alice)
        third.close()
        bob = harness.handshake({"X-Forwarded-For": "198.51.100.2"})
        assert [c.status for c in held] == [101, 101]
        assert third.status == 429
        assert bob.status == 101
        assert harness.stats["max_connections_per_client"] == 1
        for client in [*held, bob]:
            client.close()
    finally:
        harness.server.stop()


def test_http_requests_pass_through_untouched() -> None:
    harness = Harness("websockets")
    try:
        with socket.create_connection(("127.0.0.1", harness.server.port), timeout=5) as sock:
            sock.sendall(b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(64).startswith(b"HTTP/1.1 404")
    finally:
        harness.server.stop()
