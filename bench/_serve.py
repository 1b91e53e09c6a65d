"""How every benchmark server runs: the app ``BENCH_VARIANT`` names, under uvicorn.

``python -m bench.<name>_server`` listens on a free loopback port and prints one JSON line
``{"port", "stall_port", "pid"}`` once uvicorn has started (what ``bench._proc.Server``
waits for). ``stall_port`` is a second listener whose ``SO_SNDBUF`` is ``BENCH_SNDBUF``
bytes, for the servers that take a stalled peer (see ``bench.fanout_server``), else null.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

App = TypeVar("App")


def app_for_variant(factories: Mapping[str, Callable[[], App]], default: str) -> App:
    """The app named by ``BENCH_VARIANT`` (for ``uvicorn --factory``)."""
    variant = os.environ.get("BENCH_VARIANT", default)
    if variant not in factories:
        raise SystemExit(f"BENCH_VARIANT must be one of {', '.join(factories)}, not {variant!r}")
    return factories[variant]()


def serve(app: str, *, stall_listener: bool = False, **options: Any) -> None:
    """Run the app factory ``app`` (``"module:function"``) under uvicorn until it stops.

    ``options`` go to ``uvicorn.Config`` (``ws``, ``http``, ``lifespan``, ``backlog``...);
    uvicorn logs warnings and worse, and gives connections 2 s to finish on shutdown. The
    open-files limit is raised first: a fan-out server holds a thousand sockets and more.
    """
    import uvicorn

    from ._wsclient import raise_nofile_limit

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    raise_nofile_limit()
    sockets = [_listener(None)]
    sndbuf = os.environ.get("BENCH_SNDBUF")
    if stall_listener and sndbuf:
        sockets.append(_listener(int(sndbuf)))
    config = uvicorn.Config(
        app, factory=True, log_level="warning", timeout_graceful_shutdown=2, **options
    )
    asyncio.run(_serve(uvicorn.Server(config), sockets))
    sys.exit(0)


def _listener(sndbuf: int | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sndbuf is not None:  # inherited by every socket accepted from this listener
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.bind(("127.0.0.1", 0))
    return sock


async def _serve(server: Any, sockets: list[socket.socket]) -> None:
    task: Awaitable[None] = asyncio.ensure_future(server.serve(sockets=sockets))
    assert isinstance(task, asyncio.Future)
    while not server.started:
        if task.done():
            await task
            raise SystemExit("uvicorn exited before it started")
        await asyncio.sleep(0.01)
    ports = [s.getsockname()[1] for s in sockets]
    info = {"port": ports[0], "stall_port": ports[1] if len(ports) > 1 else None}
    print(json.dumps({**info, "pid": os.getpid()}), flush=True)
    await task
