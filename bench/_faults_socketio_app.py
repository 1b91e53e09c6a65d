"""The worker ``bench.faults_socketio`` runs: python-socketio on ``AsyncRedisManager``.

Socket.IO clients are put in room ``"r"`` on connect. ``POST /publish`` emits its JSON body
to the room as event ``"msg"`` and answers what the emitting code was told:
``{"ok": true}``, or ``{"ok": false, "error": "<exception class name>"}`` if ``emit`` raised.
``BENCH_REDIS_URL`` names Redis.
"""

from __future__ import annotations

import os
from typing import Any

import socketio  # type: ignore[import-untyped]
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

sio = socketio.AsyncServer(
    async_mode="asgi", client_manager=socketio.AsyncRedisManager(os.environ["BENCH_REDIS_URL"]),
    logger=False, engineio_logger=False,
)  # fmt: skip


@sio.event  # type: ignore[untyped-decorator]
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    await sio.enter_room(sid, "r")


async def publish(request: Request) -> JSONResponse:
    try:
        await sio.emit("msg", await request.json(), room="r")
    except Exception as exc:  # whatever the emitting code would see
        return JSONResponse({"ok": False, "error": type(exc).__name__})
    return JSONResponse({"ok": True})


app: ASGIApp = socketio.ASGIApp(
    sio, other_asgi_app=Starlette(routes=[Route("/publish", publish, methods=["POST"])])
)
