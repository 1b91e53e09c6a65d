"""Helpers for testing apps built on asgi_rt, in process, under asyncio or trio.

:func:`websocket_session` runs an ASGI app's WebSocket endpoint in the current
task group and gives the test the client's side of the conversation. The
app-to-client stream has a configurable buffer: with ``buffer=0`` every app send
waits until the test receives it, which is how a peer that stopped reading looks
to the app, so backpressure can be tested without a network.

Example::

    async with websocket_session(app, "/ws") as ws:
        await ws.send_text("hello")
        assert await ws.receive_text() == "hello"
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.types import ASGIApp, Message

__all__ = ["WebSocketRejected", "WebSocketSession", "websocket_session"]


class WebSocketRejected(AssertionError):
    """The app refused the handshake (HTTP response, or a close before accept).

    Attributes:
        status: the HTTP status (403 for a close before accept, as servers answer).
        headers: the response headers, names lower-cased.
        body: the response body.
    """

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        super().__init__(f"handshake rejected with {status}: {body[:80]!r}")
        self.status, self.headers, self.body = status, headers, body


class WebSocketSession:
    """The client's side of an in-process WebSocket conversation.

    Attributes:
        accepted: the ``websocket.accept`` message (``None`` if the app rejected).
        close_code: the code of the ``websocket.close`` the app sent, once it did.
    """

    def __init__(
        self, to_app: MemoryObjectSendStream[Message], from_app: MemoryObjectReceiveStream[Message]
    ) -> None:
        self._to_app = to_app
        self._from_app = from_app
        self.accepted: Message | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None

    async def send_text(self, text: str) -> None:
        await self._to_app.send({"type": "websocket.receive", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        await self._to_app.send({"type": "websocket.receive", "bytes": data})

    async def send_json(self, value: Any) -> None:
        await self.send_text(json.dumps(value))

    async def disconnect(self, code: int = 1000) -> None:
        """Tell the app the client went away."""
        await self._to_app.send({"type": "websocket.disconnect", "code": code})

    async def receive(self) -> Message:
        """The next message the app sent (``websocket.send`` or ``websocket.close``).

        Raises:
            AssertionError: the app closed or finished instead of sending.
        """
        try:
            message = await self._from_app.receive()
        except anyio.EndOfStream:
            raise AssertionError("the app finished without sending another message") from None
        if message["type"] == "websocket.close":
            self.close_code = message.get("code", 1000)
            self.close_reason = message.get("reason") or ""
        return message

    async def receive_text(self) -> str:
        message = await self.receive()
        if message["type"] != "websocket.send" or message.get("text") is None:
            raise AssertionError(f"expected a text frame, got {message!r}")
        return str(message["text"])

    async def receive_json(self) -> Any:
        return json.loads(await self.receive_text())

    async def receive_close(self) -> int:
        """Skip data frames until the app's close; return its code."""
        while (message := await self.receive())["type"] != "websocket.close":
            pass
        return int(message.get("code", 1000))


@asynccontextmanager
async def websocket_session(
    app: ASGIApp,
    path: str = "/",
    *,
    buffer: int = 1024,
    headers: list[tuple[bytes, bytes]] | None = None,
    subprotocols: list[str] | None = None,
    timeout: float = 5.0,
) -> AsyncIterator[WebSocketSession]:
    """Run ``app`` for one WebSocket connection to ``path``; yield the client side.

    ``buffer`` is the app-to-client stream's capacity (0: every send waits for the
    test to receive). On exit the client disconnects (if the app has not closed) and the app gets
    ``timeout`` seconds to finish before it is cancelled.

    Raises:
        WebSocketRejected: the app refused the handshake (an ``AssertionError``).
        Exception: whatever the app raised, unwrapped (it takes precedence over the
            test body's own error, which it usually causes).
    """
    scope = _scope(path, headers or [], subprotocols or [])
    to_app, app_receive = anyio.create_memory_object_stream[Message](64)
    app_send, from_app = anyio.create_memory_object_stream[Message](buffer)
    await to_app.send({"type": "websocket.connect"})
    app_failed: list[Exception] = []
    test_failed: list[Exception] = []

    async def send(message: Message) -> None:
        # Like a writable transport: return at once while there is room, and only
        # wait (suspend) once the test has stopped reading and the buffer is full.
        try:
            app_send.send_nowait(message)
        except anyio.WouldBlock:
            await app_send.send(message)

    async def run_app() -> None:
        async with app_send, app_receive:
            try:
                await app(scope, app_receive.receive, send)
            except Exception as exc:  # re-raised unwrapped once the task group is done
                app_failed.append(exc)

    async with anyio.create_task_group() as tg, to_app, from_app:
        tg.start_soon(run_app)
        session = WebSocketSession(to_app, from_app)
        try:
            session.accepted = await _accepted(session)
            yield session
        except Exception as exc:
            test_failed.append(exc)
        finally:
            with anyio.move_on_after(timeout, shield=True) as waited:
                if session.close_code is None:
                    with suppress(anyio.BrokenResourceError):  # the app already returned
                        await to_app.send({"type": "websocket.disconnect", "code": 1000})
                await _drain(from_app)
            if waited.cancelled_caught:
                tg.cancel_scope.cancel()
    if app_failed or test_failed:
        raise (app_failed or test_failed)[0]


async def _accepted(session: WebSocketSession) -> Message:
    first = await session.receive()
    if first["type"] == "websocket.accept":
        return first
    if first["type"] == "websocket.close":
        raise WebSocketRejected(403, {}, b"")
    if first["type"] != "websocket.http.response.start":
        raise AssertionError(f"expected websocket.accept, got {first!r}")
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in first["headers"]}
    body = b""
    while True:
        part = await session.receive()
        body += part.get("body", b"")
        if not part.get("more_body"):
            raise WebSocketRejected(first["status"], headers, body)


async def _drain(stream: MemoryObjectReceiveStream[Message]) -> None:
    async for _ in stream:
        pass


def _scope(
    path: str, headers: list[tuple[bytes, bytes]], subprotocols: list[str]
) -> dict[str, Any]:
    raw_path, _, query = path.partition("?")
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "scheme": "ws",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "headers": [(b"host", b"testserver"), *headers],
        "subprotocols": subprotocols,
        "state": {},
        "extensions": {"websocket.http.response": {}},
    }
