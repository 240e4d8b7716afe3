"""A Server-Sent Events parser that knows nothing of HTTP: feed it lines, get events back.

Kept apart from the client so it can be tested (and fuzzed) on its own: the wire format has corner cases (comments,
multi-line data, a missing trailing blank line, CRLF) that are easier to get right without a socket in the way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str
    id: str | None = None

    def json(self) -> dict[str, Any]:
        """The event's data as a JSON object; an empty object when it is not one (a malformed frame is not fatal)."""
        try:
            value = json.loads(self.data)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            return {}
        return value if isinstance(value, dict) else {}


class SseParser:
    """Turns SSE lines into events (the WHATWG rules the API's streams rely on).

    ``last_event_id`` survives across events, as a browser's EventSource keeps it, so a reconnect can send it.
    """

    def __init__(self) -> None:
        self.last_event_id: str | None = None
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> SseEvent | None:
        """One line, without its line ending; returns the event a blank line completes, else None."""
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None  # "retry" and unknown fields are ignored, as the standard says

    def reconnected(self) -> None:
        """A new connection: an event half-read on the dropped one is forgotten (the server sends it again after
        ``last_event_id``), as an EventSource does; otherwise its fields would mix into the resent copy."""
        self._event, self._data, self._id = "", [], None

    def feed_lines(self, lines: Iterable[str]) -> Iterator[SseEvent]:
        for line in lines:
            event = self.feed(line)
            if event is not None:
                yield event

    def _dispatch(self) -> SseEvent | None:
        if self._id is not None:
            self.last_event_id = self._id
        event_id, self._id = self._id, None
        if not self._data:
            self._event = ""
            return None
        event = SseEvent(self._event or "message", "\n".join(self._data), event_id or self.last_event_id)
        self._event, self._data = "", []
        return event
