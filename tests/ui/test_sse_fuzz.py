"""Fuzzing the UI's SSE parser: arbitrary lines never raise, and every event survives a round trip through the
wire format."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ui.sse import SseEvent, SseParser

# A field value on the wire cannot hold a line break (it would end the line), nor can an id hold NUL.
ONE_LINE = st.text(st.characters(exclude_characters="\r\n"), max_size=40)
NAME = st.text(st.characters(exclude_characters="\r\n"), min_size=1, max_size=20)
EVENT_ID = st.text(st.characters(exclude_characters="\r\n\0"), min_size=1, max_size=20)
DATA = st.lists(ONE_LINE, min_size=1, max_size=5).map("\n".join)


def serialize(event: SseEvent) -> list[str]:
    """The lines of one event as a server writes them (without line endings), ending with the blank line."""
    lines = [f"id: {event.id}"] if event.id is not None else []
    lines.append(f"event: {event.event}")
    lines += [f"data: {line}" for line in event.data.split("\n")]
    return [*lines, ""]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=60), max_size=30))
def test_arbitrary_lines_never_raise(lines: list[str]) -> None:
    parser = SseParser()
    for event in parser.feed_lines(lines):
        assert isinstance(event.json(), dict)
    parser.reconnected()
    parser.feed("")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.builds(SseEvent, event=NAME, data=DATA, id=st.none() | EVENT_ID), max_size=8),
       st.lists(ONE_LINE.map(lambda text: ":" + text), max_size=3))
def test_events_round_trip(events: list[SseEvent], comments: list[str]) -> None:
    parser = SseParser()
    lines = [line for event in events for line in [*comments, *serialize(event)]]
    parsed = list(parser.feed_lines(lines))
    last_id = None
    expected = []
    for event in events:
        last_id = event.id if event.id is not None else last_id
        expected.append(SseEvent(event.event, event.data, last_id))  # an event without an id carries the last one
    assert parsed == expected
    assert parser.last_event_id == last_id


def test_deeply_nested_data_is_not_fatal() -> None:
    event = SseEvent("token", "[" * 100_000)
    assert event.json() == {}
