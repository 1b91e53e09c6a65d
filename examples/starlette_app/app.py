"""The same room chat in plain Starlette, plus a live dashboard over Server-Sent Events.

Run: `.venv/bin/uvicorn examples.starlette_app.app:app --port 8001`, then open
http://127.0.0.1:8001/ (chat) and http://127.0.0.1:8001/dashboard (live numbers).

The dashboard is an SSE member of the same RoomManager as the chat sockets: once a second
the app publishes its counters to the ``dashboard`` room, and every browser with the
dashboard open gets them as an event, through the same bounded queue and overflow policy
as a WebSocket member. ``EventSource`` reconnects on its own and resumes with
``Last-Event-ID``. ASGI_RT_BACKEND, ASGI_RT_ALLOWED_ORIGINS and HOST/PORT (for the default
allowlist: run with ``PORT=8001``) work as in the FastAPI example.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgi_rt import (
    EventStreamResponse,
    FirstMessageAuthMiddleware,
    HandshakeMiddleware,
    Metrics,
    RoomManager,
    TelemetryMiddleware,
    drain_on_signal,
    get_rooms,
    metrics_app,
    provide,
)
from asgi_rt.backends import BackendUnavailable
from examples.chat import (
    DASHBOARD,
    allowed_origins,
    authorize,
    chat_session,
    proxy_options,
    verify_token,
)
from examples.client_bundle import client_bundle

HERE = Path(__file__).parent
CHAT_PAGE = (HERE.parent / "fastapi_app" / "index.html").read_text()
DASHBOARD_PAGE = (HERE / "dashboard.html").read_text()
ORIGINS = allowed_origins(default_port=8001)


async def chat_page(request: Request) -> HTMLResponse:
    return HTMLResponse(CHAT_PAGE)


async def dashboard_page(request: Request) -> HTMLResponse:
    return HTMLResponse(DASHBOARD_PAGE)


async def chat(websocket: WebSocket) -> None:
    await chat_session(get_rooms(websocket), websocket, websocket.path_params["room"])


async def dashboard_events(request: Request) -> EventStreamResponse:
    return EventStreamResponse(get_rooms(request), room=DASHBOARD, retry=2000, heartbeat=15)


async def publish_counters(rooms: RoomManager, interval: float = 1.0) -> None:
    """Once per ``interval``, this worker's counters to the dashboard room."""
    while True:
        await anyio.sleep(interval)
        if DASHBOARD not in rooms.rooms():
            continue  # nobody watching here
        stats = rooms.stats()
        counters = {
            "worker": os.getpid(), "connections": stats.active,
            "rooms": len(rooms.rooms()), "sent": stats.sent, "queued": stats.queued,
            "dropped": stats.dropped_oldest + stats.dropped_newest,
            "slow_consumer_disconnects": stats.slow_consumer_disconnects,
        }  # fmt: skip
        with contextlib.suppress(BackendUnavailable):  # the next tick tries again
            await rooms.publish(DASHBOARD, counters)


def create_app(backend: str | None = None) -> Starlette:
    registry = CollectorRegistry()  # one per app: create_app() can be called again (tests)
    metrics = Metrics(registry)
    rooms = RoomManager(backend=backend or os.environ.get("ASGI_RT_BACKEND", "memory://"),
                        presence=True, metrics=metrics, history_size=100,
                        authorize=authorize)  # fmt: skip

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # on SIGTERM: close sockets spread over 5 s (clients reconnect with jitter), then stop
        async with rooms, drain_on_signal(rooms, window=5.0), anyio.create_task_group() as tg:
            tg.start_soon(publish_counters, rooms)
            yield
            tg.cancel_scope.cancel()

    # Middleware(...) lists run outermost first: telemetry (sees rejections too), handshake
    # checks (before accept), then authentication (HTTP requests pass through both).
    middleware = [
        Middleware(TelemetryMiddleware, metrics=metrics),
        Middleware(HandshakeMiddleware, allowed_origins=ORIGINS, allow_missing_origin=True,
                   on_reject=metrics.handshake_rejected, **proxy_options()),
        Middleware(FirstMessageAuthMiddleware, authenticate=verify_token,
                   on_failure=metrics.auth_failed),
    ]  # fmt: skip
    routes = [
        Route("/", chat_page),
        Route("/asgi-rt-client.js", client_bundle),
        Route("/dashboard", dashboard_page),
        Route("/events/dashboard", dashboard_events),
        Route("/metrics", metrics_app(registry)),
        WebSocketRoute("/ws/{room}", chat),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    provide(app, rooms, name="rooms")
    return app


app = create_app()
