"""The worker the fault scenarios run: ``uvicorn tests.faults._app:app``.

The room app of every server test (``tests._rooms_app``, first-message auth on, backend
from ``ASGI_RT_TEST_BACKEND``), plus two HTTP endpoints for the test process:

- ``POST /publish/{room}?key=...``: ``rooms.publish(room, <JSON body>)`` and answers what
  the caller of ``publish`` was told: ``{"ok": true, "seq": n, "epoch": e}`` or
  ``{"ok": false, "error": "<exception class name>", "message": "..."}``;
- ``GET /debug``: ``{"connections": n, "tasks": n}`` (live connections, asyncio tasks).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from asgi_rt import BackendUnavailable, RoomManager

from .._rooms_app import make_app

rooms = RoomManager(backend=os.environ.get("ASGI_RT_TEST_BACKEND", "memory://"))
rooms_app = make_app(rooms, auth=True)


async def publish(request: Request) -> JSONResponse:
    options: dict[str, Any] = {}
    if key := request.query_params.get("key"):
        options["idempotency_key"] = key  # only when asked: the contract's newest argument
    try:
        publication = await rooms.publish(request.path_params["room"], await request.json(),
                                          **options)  # fmt: skip
    except BackendUnavailable as exc:
        return JSONResponse({"ok": False, "error": type(exc).__name__, "message": str(exc)})
    return JSONResponse({"ok": True, "seq": publication.seq, "epoch": publication.epoch})


async def debug(request: Request) -> JSONResponse:
    return JSONResponse({"connections": len(rooms), "tasks": len(asyncio.all_tasks())})


http_app = Starlette(routes=[Route("/publish/{room}", publish, methods=["POST"]),
                             Route("/debug", debug)])  # fmt: skip


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """HTTP to the endpoints above; websockets and the lifespan to the room app."""
    await (http_app if scope["type"] == "http" else rooms_app)(scope, receive, send)
