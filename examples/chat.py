"""The chat protocol both example apps speak (one copy, so the page works with either).

A socket on ``/ws/{room}`` that passed first-message auth joins ``room`` (resuming after
``?since=<seq>&epoch=<epoch>``), is told who is present, and publishes each
``{"text": ...}`` it sends as ``{"type": "message", "from": user, "text": ...}`` to the room
on every worker.

Frames the page receives: ``{"type": "auth_ok"}``; ``{"type": "joined", "room": ..., "seq":
..., "epoch": ...}`` (pass ``since`` and ``epoch`` back when reconnecting); ``{"type":
"presence", "room": ...,
"members": [...]}`` (who is here, once after joining); ``{"room": ..., "seq": ..., "data":
...}`` per publication, where ``data`` is a ``message`` or a ``presence`` join/leave event;
``{"type": "recovery_failed", ...}`` when history cannot fill a gap; ``{"type": "error",
"reason": "forbidden", "room": ...}`` when :func:`authorize` refuses a join (then a 1008
close) or a message (the socket stays). A bad room name,
``since`` or ``epoch`` closes the socket 1008 with a reason (a client bug: retrying the
same URL cannot help); an unreachable backplane closes it 1013 (try again later).
"""

from __future__ import annotations

import os
import re
from typing import Any

from starlette.websockets import WebSocket

from asgi_rt import Connection, Forbidden, RoomManager
from asgi_rt.backends import BackendUnavailable

DEMO_TOKENS = {"alice-token": "alice", "bob-token": "bob", "carol-token": "carol"}
ROOM_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
SEQ = re.compile(r"[0-9]{1,18}")
EPOCH = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_TEXT = 2000


def allowed_origins(default_port: int) -> list[str]:
    """The browser origins allowed to open sockets: ``ASGI_RT_ALLOWED_ORIGINS`` (comma-
    separated) if set, else the page's own origin from ``HOST``/``PORT`` (what ``make run
    HOST=... PORT=...`` serves on; a loopback host also as ``localhost`` and ``127.0.0.1``)."""
    if override := os.environ.get("ASGI_RT_ALLOWED_ORIGINS"):
        return [origin.strip() for origin in override.split(",") if origin.strip()]
    host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", str(default_port))
    loopback = host in {"127.0.0.1", "localhost", "0.0.0.0", "::", "::1"}
    hosts = ["127.0.0.1", "localhost"] if loopback else [host]
    return [f"http://{name}:{port}" for name in hosts]


def proxy_options() -> dict[str, Any]:
    """HandshakeMiddleware options for running behind a proxy: with ``ASGI_RT_PROXY_HOPS=N``
    (the proxies you run), per-client limits count the address N entries from the right of
    ``X-Forwarded-For``; ``ASGI_RT_MAX_PER_CLIENT`` sets that limit (default 50)."""
    options: dict[str, Any] = {
        "max_connections_per_client": int(os.environ.get("ASGI_RT_MAX_PER_CLIENT", "50"))
    }
    if hops := os.environ.get("ASGI_RT_PROXY_HOPS"):
        options.update(client_ip_header="x-forwarded-for", trusted_hops=int(hops))
    return options


async def verify_token(token: str) -> str | None:
    """Look the token up; a real app verifies a JWT or asks its session store."""
    return DEMO_TOKENS.get(token)


DASHBOARD = "dashboard"  # the server publishes its counters here; clients only read


async def authorize(user: Any, action: str, room: str) -> bool:
    """Who may join, stream or publish to which room (``RoomManager(authorize=...)``).

    ``private-<user>`` is that user's alone; the dashboard is read-only for clients
    (``publish_as`` is refused; the server's own ``rooms.publish`` is not asked); any
    other room is open to every logged-in user.
    """
    if room.startswith("private-"):
        return user is not None and room == f"private-{user}"
    if room == DASHBOARD:
        return action != "publish"
    return user is not None


async def chat_session(rooms: RoomManager, websocket: WebSocket, room: str) -> None:
    user = websocket.scope["user"]  # set by FirstMessageAuthMiddleware
    since, epoch = websocket.query_params.get("since"), websocket.query_params.get("epoch")
    problem = invalid(room, since, epoch)
    if problem:
        await websocket.close(1008, problem)
        return
    async with rooms.connect(websocket, user=user) as conn:
        try:
            await rooms.join(conn, room, since=int(since) if since else None, epoch=epoch,
                             announce=True)  # fmt: skip
            members = list((await rooms.presence(room)).values())
            await conn.send({"type": "presence", "room": room, "members": members})
            async for message in conn.iter_json():
                if text := text_of(message):
                    await say(rooms, conn, room, {"type": "message", "from": user, "text": text})
        except Forbidden as refused:  # authorize said no to the join: tell the page, close
            await conn.send({"type": "error", "reason": refused.reason, "room": room})
            await conn.close(refused.code, refused.reason)
        except BackendUnavailable:
            await conn.close(1013, "chat backend unavailable")  # the page retries later


async def say(rooms: RoomManager, conn: Connection, room: str, message: dict[str, Any]) -> None:
    """Publish what the client said, if it may; else an error frame (the socket stays)."""
    try:
        await rooms.publish_as(conn, room, message)
    except Forbidden as refused:
        await conn.send({"type": "error", "reason": refused.reason, "room": room})


def invalid(room: str, since: str | None, epoch: str | None) -> str:
    """Why the room name or resume point is unacceptable ("" when it is fine)."""
    if not ROOM_NAME.fullmatch(room):
        return "invalid room name: 1-32 of A-Z a-z 0-9 _ -"
    if since is not None and not SEQ.fullmatch(since):
        return "invalid since: expected a non-negative integer"
    if epoch is not None and not EPOCH.fullmatch(epoch):
        return "invalid epoch"
    return ""


def text_of(message: Any) -> str:
    """The message's text, cut to MAX_TEXT; "" for anything else (ignored)."""
    text = message.get("text") if isinstance(message, dict) else None
    return text[:MAX_TEXT] if isinstance(text, str) and text.strip() else ""
