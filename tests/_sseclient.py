"""A minimal EventSource for tests: parses ``text/event-stream`` as the HTML spec says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Event:
    data: str = ""
    event: str = "message"
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    """Yield every dispatched event; comment-only blocks come as an Event with ``comments``."""
    current, data = Event(), []
    async for line in response.aiter_lines():
        if line == "":
            if data or current.comments or current.retry is not None:
                current.data = "\n".join(data)
                yield current
            current, data = Event(), []
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            current.comments.append(value)
        elif name == "data":
            data.append(value)
        elif name == "id":
            current.id = value
        elif name == "event":
            current.event = value
        elif name == "retry":
            current.retry = int(value)


async def next_data_event(stream: AsyncIterator[Event], *, joined: bool = False) -> Event:
    """The next event that carries data (heartbeat comments and retry lines skipped, and
    the room's ``joined`` announcement unless ``joined``)."""
    async for event in stream:
        if event.comments or event.retry is not None:
            continue
        if not joined and event.data.startswith('{"type":"joined"'):
            continue
        return event
    raise AssertionError("the event stream ended")


def sse_headers(last_event_id: str | None = None, **extra: Any) -> dict[str, str]:
    headers = {"accept": "text/event-stream", **extra}
    if last_event_id is not None:
        headers["last-event-id"] = last_event_id
    return headers
