from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .._redis import RedisServer
from ._cluster import Workers
from ._proxy import FaultProxy


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[FaultProxy]:
    """The fault proxy in front of ``redis_server``, passing everything through."""
    fault_proxy = FaultProxy(redis_server.port)
    fault_proxy.start()
    yield fault_proxy
    fault_proxy.stop()


@pytest.fixture
def workers(redis_server: RedisServer, tmp_path: Path) -> Iterator[Workers]:
    """Two workers on ``redis_server`` directly."""
    running = Workers(redis_server.url, tmp_path)
    yield running
    running.stop()


@pytest.fixture
def proxied_workers(proxy: FaultProxy, tmp_path: Path) -> Iterator[Workers]:
    """Two workers that reach Redis through ``proxy``."""
    running = Workers(proxy.url, tmp_path)
    yield running
    running.stop()
