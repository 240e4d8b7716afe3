"""The UI's API client where it is more than a call: the SSE parser's corner cases, and a chat stream that survives
a dropped connection (a proxy of the test's own cuts it) by resuming with Last-Event-ID."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from urllib.parse import urlsplit

from tests.ui.stack import UiStack
from ui.client import ApiClient
from ui.sse import SseEvent, SseParser


def parse(*lines: str) -> list[SseEvent]:
    return list(SseParser().feed_lines(lines))


def test_comments_are_skipped_and_fields_without_a_space_count() -> None:
    assert parse(": keep-alive", "event: token", ":another", "data:{\"text\":\"a\"}", "") == [
        SseEvent("token", '{"text":"a"}')]


def test_multi_line_data_is_joined_with_newlines() -> None:
    [event] = parse("data: first", "data: second", "data:", "")
    assert event.data == "first\nsecond\n" and event.event == "message"


def test_crlf_line_endings() -> None:
    parser = SseParser()
    assert parser.feed("id: s:1\r\n") is None and parser.feed("event: token\r\n") is None
    assert parser.feed("data: {\"text\": \"x\"}\r\n") is None
    event = parser.feed("\r\n")
    assert event == SseEvent("token", '{"text": "x"}', "s:1") and event.json() == {"text": "x"}


def test_the_last_event_id_persists_until_a_new_one_comes() -> None:
    parser = SseParser()
    events = list(parser.feed_lines(["id: s:1", "data: a", "", "data: b", "", "id: s:2", "data: c", "",
                                     "id: bad\0id", "data: d", ""]))
    assert [event.id for event in events] == ["s:1", "s:1", "s:2", "s:2"]
    assert parser.last_event_id == "s:2"


def test_an_event_with_no_data_is_not_dispatched_and_leaves_nothing_behind() -> None:
    parser = SseParser()
    assert list(parser.feed_lines(["event: ping", "", "data: x", ""])) == [SseEvent("message", "x")]
    assert list(parser.feed_lines(["id: s:9", ""])) == [] and parser.last_event_id == "s:9"


def test_malformed_or_non_object_json_reads_as_an_empty_object() -> None:
    assert SseEvent("token", "{not json").json() == {}
    assert SseEvent("token", "[1, 2]").json() == {}
    assert SseEvent("token", '{"text": "ok"}').json() == {"text": "ok"}


class CuttingProxy:
    """A TCP proxy to the API that cuts its first connection in the middle of an event: after the data line of
    the third token event, before the blank line that would complete it."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.connections = 0
        self.cut = False
        self.handlers: set[asyncio.Task] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        cutting = self.connections == 1
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)

        async def upward() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()

        async def downward() -> None:
            seen = b""
            while data := await up_reader.read(65536):
                if cutting:
                    seen += data
                    at = _nth(seen, b"event: token\ndata: ", 3)
                    if at >= 0 and seen.find(b"\n", at + 20) >= 0:
                        end = seen.find(b"\n", at + 20) + 1
                        writer.write(data[:len(data) - (len(seen) - end)])
                        await writer.drain()
                        self.cut = True
                        return
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.create_task(upward()), asyncio.create_task(downward())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for stream in (writer, up_writer):
            stream.close()
            with suppress(OSError):
                await stream.wait_closed()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            yield f"http://127.0.0.1:{port}"
            # The client has closed its connections by now: let the handlers see that and finish.
            await asyncio.wait(self.handlers, timeout=5)


def _nth(data: bytes, needle: bytes, n: int) -> int:
    at = -1
    for _ in range(n):
        at = data.find(needle, at + 1)
        if at < 0:
            return -1
    return at


def test_a_dropped_stream_is_resumed_whole(stack: UiStack) -> None:
    token = stack.token_for(stack.new_user("resume"))
    proxy = CuttingProxy(stack.api.base_url)

    async def through_proxy() -> list[SseEvent]:
        async with proxy.serving() as url:
            client = ApiClient(url, token)
            try:
                return [event async for event in client.chat_stream(
                    {"message": "Keep talking", "max_tokens": 60, "temperature": 0}, resume_delay_s=0.1)]
            finally:
                client.close()

    # In a thread of its own: the session's Playwright browser keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        events = pool.submit(asyncio.run, through_proxy()).result()
    assert proxy.cut and proxy.connections >= 2  # it really was cut, and picked up again

    stream_id = events[0].json()["stream_id"]
    assert events[0].event == "start" and events[-1].event == "done"
    assert [event.id for event in events] == [f"{stream_id}:{n}" for n in range(1, len(events) + 1)]
    assert all(event.json() for event in events)  # no event came out garbled by the cut
    text = "".join(event.json()["text"] for event in events if event.event == "token")

    conversation_id = events[0].json()["conversation_id"]
    deadline = time.monotonic() + 5
    while (messages := stack.api_get(f"/v1/conversations/{conversation_id}", token)["messages"])[-1]["role"] \
            != "assistant":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert messages[-1]["content"] == text  # the whole answer, as the server saved it

def test_a_half_read_event_is_forgotten_on_reconnect() -> None:
    parser = SseParser()
    list(parser.feed_lines(["id: s:1", "event: token", "data: {\"text\": \"a\"}", "", "id: s:2", "event: token",
                            "data: {\"text\": \"b\"}"]))  # the connection drops before the blank line
    parser.reconnected()
    [event] = parser.feed_lines(["id: s:2", "event: token", "data: {\"text\": \"b\"}", ""])
    assert event == SseEvent("token", '{"text": "b"}', "s:2") and parser.last_event_id == "s:2"
