"""The wire protocol as a JSON Schema: what clients send and receive, written down once.

The schema (``asgi_rt/schema/protocol.json``, draft 2020-12) names every frame of the
protocol under ``$defs``: ``Auth``/``AuthOk``, ``Ping``/``Pong``, ``Joined``,
``RecoveryFailed``, ``RoomFrame``, ``Envelope``, ``Ack``, ``Error``, and the SSE
``SseEventId`` and ``SseClose``; ``ServerMessage`` and ``ClientMessage`` are the unions a
client receives and sends. ``python -m asgi_rt schema`` prints it; the browser client
(``clients/js``, npm ``asgi-rt-client``) generates its TypeScript types from it.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

__all__ = ["protocol_schema", "protocol_schema_text"]


def protocol_schema_text() -> str:
    """The schema's JSON text, as shipped in the package."""
    return files("asgi_rt").joinpath("schema/protocol.json").read_text(encoding="utf-8")


def protocol_schema() -> dict[str, Any]:
    """The schema as a dict (a fresh copy each call: callers may change it)."""
    schema: dict[str, Any] = json.loads(protocol_schema_text())
    return schema
