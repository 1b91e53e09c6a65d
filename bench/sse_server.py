"""The SSE benchmark servers: one ASGI app per variant, run under uvicorn.

Every app serves:

* ``GET /events``: one subscriber's ``text/event-stream``;
* ``POST /pub``: the body (UTF-8 text) is broadcast to every subscriber as one event's
  ``data``; answered ``204`` once the app has handed it to every subscriber;
* ``GET /stats``: JSON counters (``?gc=1`` runs ``gc.collect()`` first).

Variants (``BENCH_VARIANT``):

* ``asgi_rt``: ``EventStreamResponse(manager, heartbeat=None)`` on a default
  ``ConnectionManager`` (``queue_size`` 256, ``Overflow.DISCONNECT``, ``send_timeout`` 5 s);
  ``/pub`` awaits ``manager.broadcast(text)``.
* ``sse_starlette``: the common recipe: a set of per-subscriber ``asyncio.Queue()``
  (unbounded, as the recipes have it), publish = ``put_nowait`` into each, and
  sse-starlette's ``EventSourceResponse`` over a generator that yields
  ``{"data": item}`` from its queue (default options: ping every 15 s, no send timeout).
* ``streaming``: the same queues behind Starlette's plain ``StreamingResponse``, the
  generator yielding ``f"data: {item}\\n\\n"``.

Run with ``python -m bench.sse_server`` (prints one JSON line ``{"port", "stall_port",
"pid"}`` once listening, see ``bench._serve``). ``BENCH_HTTP`` picks uvicorn's HTTP
implementation (``h11`` or ``httptools``); ``BENCH_SNDBUF=<bytes>`` opens the second,
small-send-buffer listener for the stalled subscriber (see ``bench.fanout_server``).
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from asgi_rt import ConnectionManager
from asgi_rt.sse import EventStreamResponse

from ._serve import app_for_variant, serve
from .fanout_server import Counters, manager_stats

VARIANTS = ("asgi_rt", "sse_starlette", "streaming")

Publish = Callable[[str], Any]


class Publisher:
    """The ``/pub`` endpoint: counts broadcasts started and finished around ``publish``."""

    def __init__(self, publish: Publish) -> None:
        self.publish = publish
        self.counters = Counters()

    async def endpoint(self, request: Request) -> Response:
        text = (await request.body()).decode()
        self.counters.started += 1
        result = self.publish(text)
        if asyncio.iscoroutine(result):
            await result
        self.counters.done += 1
        return Response(status_code=204)


def _app(events: Callable[[Request], Any], publisher: Publisher, stats: Any) -> Starlette:
    async def stats_endpoint(request: Request) -> JSONResponse:
        if request.query_params.get("gc"):
            gc.collect()
        return JSONResponse({**stats(), **publisher.counters.as_dict()})

    return Starlette(
        routes=[
            Route("/events", events),
            Route("/pub", publisher.endpoint, methods=["POST"]),
            Route("/stats", stats_endpoint),
        ]
    )


# asgi_rt -----------------------------------------------------------------------------------


def asgi_rt_app() -> Starlette:
    manager = ConnectionManager()

    async def events(request: Request) -> Response:
        return EventStreamResponse(manager, heartbeat=None)

    return _app(events, Publisher(manager.broadcast), lambda: manager_stats(manager))


# the per-subscriber queue recipe -----------------------------------------------------------


class Subscribers:
    """A set of unbounded per-subscriber queues: what the SSE broadcast recipes do."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[str]] = set()

    def subscribe(self) -> asyncio.Queue[str]:
        # in the endpoint, before the response starts: a subscriber that has its headers
        # is registered (the generator itself only runs after the headers are sent)
        queue: asyncio.Queue[str] = asyncio.Queue()
        self.queues.add(queue)
        return queue

    def publish(self, text: str) -> None:
        for queue in self.queues:
            queue.put_nowait(text)

    def stats(self) -> dict[str, Any]:
        sizes = [q.qsize() for q in self.queues]
        return {
            "connections": len(sizes),
            "max_queued": max(sizes, default=0),
            "total_queued": sum(sizes),
        }


def sse_starlette_app() -> Starlette:
    from sse_starlette import EventSourceResponse

    subs = Subscribers()

    async def events(request: Request) -> Response:
        queue = subs.subscribe()

        async def stream() -> AsyncIterator[dict[str, str]]:
            try:
                while True:
                    yield {"data": await queue.get()}
            finally:
                subs.queues.discard(queue)

        return EventSourceResponse(stream())

    return _app(events, Publisher(subs.publish), subs.stats)


def streaming_app() -> Starlette:
    subs = Subscribers()

    async def events(request: Request) -> Response:
        queue = subs.subscribe()

        async def stream() -> AsyncIterator[str]:
            try:
                while True:
                    yield f"data: {await queue.get()}\n\n"
            finally:
                subs.queues.discard(queue)

        return StreamingResponse(stream(), media_type="text/event-stream")

    return _app(events, Publisher(subs.publish), subs.stats)


def make_app() -> Starlette:
    """The app named by ``BENCH_VARIANT`` (for ``uvicorn --factory``)."""
    factories = {
        "asgi_rt": asgi_rt_app,
        "sse_starlette": sse_starlette_app,
        "streaming": streaming_app,
    }
    return app_for_variant(factories, "asgi_rt")


def main() -> None:
    serve(
        "bench.sse_server:make_app",
        stall_listener=True,
        http=os.environ.get("BENCH_HTTP", "h11"),
        ws="none",
        lifespan="off",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
