from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.types import ASGIApp

from ._nats import NatsServer
from ._rawclient import RawClient
from ._redis import RedisServer
from ._redis_cluster import RedisClusterServers
from ._server import RunningServer


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def serve() -> Iterator[Callable[..., RunningServer]]:
    """Start a real uvicorn for an app: ``server = serve(app, ws="websockets", sndbuf=...)``.

    At teardown the server is stopped and the test fails if the server's loop saw an
    unretrieved task exception or uvicorn logged an error.
    """
    servers: list[RunningServer] = []

    def start(app: ASGIApp, **kwargs: Any) -> RunningServer:
        server = RunningServer(app, **kwargs)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    for server in servers:
        assert server.loop_errors == [], server.loop_errors
        errors = [r.getMessage() for r in server.log.records]
        assert errors == [], errors


@pytest.fixture
def raw() -> Iterator[Callable[..., RawClient]]:
    """Open raw-socket WebSocket clients (the stalled peer); all closed at teardown."""
    clients: list[RawClient] = []

    def open_client(port: int, path: str = "/ws", **kwargs: Any) -> RawClient:
        client = RawClient(port, path, **kwargs)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh redis-server on a free port (no persistence); stopped at teardown."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """One 3-master Redis Cluster for the whole session (it takes seconds to form); tests
    use their own rooms, or ``flushall()`` first."""
    cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server with JetStream on a free port, shared by a module's tests (each test
    uses its own subject prefix); stopped at teardown."""
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()
