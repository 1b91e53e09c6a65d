"""The SSE transport: WebSocket semantics over a ``text/event-stream`` response.

It implements :class:`~asgi_rt.connections._transport.DataTransport`: a
``websocket.send`` is encoded as one event, a ``websocket.close`` as a final
``event: close`` and the end of the body. Every body chunk it writes says how many events
it carries (:data:`asgi_rt.types.EVENTS_KEY`), so that telemetry counts events without parsing them.

Encodings are cached here, not on the frames: one :class:`EventEncoder` per manager is
shared by all its streams, so that a broadcast is framed once, not once per member.
"""

from __future__ import annotations

from collections.abc import Iterable
from weakref import WeakKeyDictionary

from sse_starlette.event import ServerSentEvent
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocketState

from ._json import dumps
from .connections._encode import Frame
from .rooms._frames import RoomFrame
from .types import EVENTS_KEY

__all__ = ["EventEncoder", "EventStream", "Preframed", "encoder_for", "format_event"]

SEP = "\n"
CLOSE_EVENT = "close"


def format_event(
    data: str | None = None, *, event: str | None = None, id: str | None = None,
    retry: int | None = None, comment: str | None = None,
) -> bytes:  # fmt: skip
    """One event in ``text/event-stream`` framing (lines of ``data`` become ``data:`` lines)."""
    return ServerSentEvent(data, event=event, id=id, retry=retry, comment=comment, sep=SEP).encode()


class Preframed(Frame):
    """A message only an event stream can carry (a comment, a full event): its encoding is
    given, and ``events`` says how many events it is (a comment: none)."""

    __slots__ = ("body", "events")

    def __init__(self, body: bytes, events: int) -> None:
        super().__init__(type="websocket.send", text="")
        self.body, self.events = body, events


class EventEncoder:
    """Frames messages as events, once per message for every stream that shares it.

    The cache is bounded (``size`` messages, oldest out first) and keyed by the message
    object's identity; it holds the message, so an identity is never reused while cached.
    A room frame is encoded with ``id: <epoch>:<seq>`` for streams of its room, without
    for others: two entries.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._cache: dict[tuple[int, bool], tuple[Message, bytes]] = {}

    def encode(self, message: Message, room: str | None) -> bytes:
        if isinstance(message, Preframed):
            return message.body
        with_id = isinstance(message, RoomFrame) and message.room == room
        key = (id(message), with_id)
        hit = self._cache.get(key)
        if hit is not None:
            return hit[1]
        body = _event_of(message, with_id)
        if isinstance(message, Frame):  # shared by the recipients of a send or a broadcast
            if len(self._cache) >= self._size:
                del self._cache[next(iter(self._cache))]
            self._cache[key] = (message, body)
        return body


def _event_of(message: Message, with_id: bool) -> bytes:
    if with_id and isinstance(message, RoomFrame):
        return format_event(message["text"], id=f"{message.epoch}:{message.seq}")
    text = message.get("text")
    if text is None:
        text = bytes(message.get("bytes") or b"").decode("utf-8", "replace")
    return format_event(text)


_ENCODERS: WeakKeyDictionary[object, EventEncoder] = WeakKeyDictionary()


def encoder_for(manager: object) -> EventEncoder:
    """The encoder shared by ``manager``'s streams (kept as long as the manager lives).

    Keyed from here rather than held by the manager: the managers know nothing of SSE."""
    encoder = _ENCODERS.get(manager)
    if encoder is None:
        encoder = _ENCODERS[manager] = EventEncoder()
    return encoder


class EventStream:
    """The transport of an SSE member: WebSocket semantics over an HTTP response.

    ``accept`` starts the response, a ``websocket.send`` becomes one event, a
    ``websocket.close`` a final ``event: close`` and the end of the body; ``receive`` waits
    for ``http.disconnect``. Made by :class:`~asgi_rt.sse.EventStreamResponse`.
    """

    kind = "sse"

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, *,
        headers: Iterable[tuple[bytes, bytes]], room: str | None, encoder: EventEncoder,
    ) -> None:  # fmt: skip
        self.scope = scope
        self.application_state = WebSocketState.CONNECTING
        self._asgi_receive, self._asgi_send = receive, send
        self._headers = list(headers)
        self._room = room
        self._encoder = encoder

    async def accept(
        self, subprotocol: str | None = None, headers: Iterable[tuple[bytes, bytes]] | None = None
    ) -> None:
        await self._asgi_send({"type": "http.response.start", "status": 200,
                               "headers": [*self._headers, *(headers or ())]})  # fmt: skip
        self.application_state = WebSocketState.CONNECTED

    async def write(self, body: bytes, events: int = 0, *, more: bool = True) -> None:
        """One chunk of the body, ``events`` the number of events in it (comments: 0)."""
        await self._asgi_send({"type": "http.response.body", "body": body,
                               "more_body": more, EVENTS_KEY: events})  # fmt: skip

    async def send_data(self, message: Message) -> None:
        """The data path (``Connection`` sends data frames here): one message, one event."""
        events = message.events if isinstance(message, Preframed) else 1
        await self.write(self.encode(message), events)

    async def send(self, message: Message) -> None:
        if message["type"] != "websocket.close":
            await self.send_data(message)
            return
        self.application_state = WebSocketState.DISCONNECTED
        close = {"code": message.get("code", 1000), "reason": message.get("reason", "")}
        await self.write(format_event(dumps(close), event=CLOSE_EVENT), 1, more=False)

    async def receive(self) -> Message:
        while True:
            message = await self._asgi_receive()
            if message["type"] == "http.disconnect":
                self.application_state = WebSocketState.DISCONNECTED
                return {"type": "websocket.disconnect", "code": 1001}

    def encode(self, message: Message) -> bytes:
        """One message as one event (a room frame of this stream's room with its id)."""
        return self._encoder.encode(message, self._room)
