"""An upstream's answer to a forwarded endpoint (`api/services/raw_forwarding.py`), relayed to the client and
counted into one usage row: a JSON answer whole, an event stream event by event, any other body (speech audio, a
plain-text transcript) chunk by chunk as it arrives, all with the alias in place of the upstream's model name.

Each is opened by reading up to its first byte for the client (the whole answer, for JSON), so a deployment that
fails before then can hand over to the next; after that a failure ends the stream: an error event for an event
stream, a cut connection for a binary body (the client must not take a truncated file for a whole one).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi.responses import Response

from api.services import forwarded_endpoints as endpoints
from api.services.gateway import Deployment
from api.services.metering import Meter
from api.services.passthrough import line_batches
from engine.upstream import UpstreamError, UpstreamUnavailable


@dataclass
class Count:
    """One forwarded request's usage: the upstream's report where one comes, else the estimate; recorded once,
    with the request's hold on the deployment and the user's slot given back."""

    meter: Meter
    prompt_estimate: int
    count: Callable[[str], int]
    release: Callable[[], None]
    reported: tuple[int, int] | None = None
    generated: int = 0  # estimated from the answer's text, used without a report
    status: str | None = None

    def observe(self, payload: Any, *, streamed: bool) -> None:
        self.reported = endpoints.reported_usage(payload) or self.reported
        self.generated += (endpoints.event_tokens(payload, self.count) if streamed
                           else endpoints.answer_tokens(payload, self.count))

    def finish(self, status: str) -> None:
        self.release()
        if self.meter.recorded:
            return
        if self.reported is not None:
            self.meter.count_source = "upstream"
            self.meter.prompt_tokens, completion = self.reported
        else:
            self.meter.count_source = "estimated"
            self.meter.prompt_tokens, completion = self.prompt_estimate, self.generated
        self.meter.completion = {0: completion}
        self.meter.record(status)


@dataclass
class Opened:
    """An upstream answer read up to its first byte for the client."""

    deployment: Deployment
    response: httpx.Response
    kind: str  # json, events, bytes
    first: list[str] | bytes = b""  # events: the lines read so far; json: the whole body; bytes: the first chunk
    rest: AsyncIterator[Any] | None = None


async def read_first(deployment: Deployment, response: httpx.Response) -> Opened:
    """The answer up to its first byte for the client; raises `UpstreamUnavailable` (and closes the response)
    when it fails before that."""
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if media == "application/json":
            return Opened(deployment, response, "json", await response.aread())
        if media == "text/event-stream":
            batches = line_batches(response)
            lines: list[str] = []
            async for batch in batches:
                lines.extend(batch)
                if any(line.startswith("data:") for line in batch):
                    return Opened(deployment, response, "events", lines, batches)
            raise UpstreamUnavailable("the upstream ended its event stream before any event")
        chunks = response.aiter_raw()
        first = await anext(chunks, b"")
        return Opened(deployment, response, "bytes", first, chunks)
    except httpx.HTTPError as exc:
        await response.aclose()
        raise UpstreamUnavailable(f"the upstream failed before its answer: {type(exc).__name__}") from exc
    except BaseException:
        await response.aclose()
        raise


async def json_answer(opened: Opened, count: Count, alias: str,
                      on_response_id: Callable[[str], None]) -> Response:
    """The upstream's JSON answer with the alias for its model; usage recorded now."""
    assert isinstance(opened.first, bytes)
    await opened.response.aclose()  # read whole already: the connection goes back to the pool
    try:
        payload = json.loads(opened.first)
    except ValueError:
        count.finish("error")
        raise UpstreamError("the upstream's answer was not JSON") from None
    count.observe(payload, streamed=False)
    if (identifier := endpoints.response_id(payload)) is not None:
        on_response_id(identifier)
    body = opened.first
    if endpoints.with_alias(payload, alias):
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    count.finish("ok")
    return Response(body, status_code=opened.response.status_code, media_type="application/json")


async def relay_events(opened: Opened, count: Count, alias: str,
                       on_response_id: Callable[[str], None]) -> AsyncGenerator[bytes, None]:
    """The event stream as it comes, a read from the upstream per write to the client; each event's JSON is
    looked at (usage, the delta's text, a response id) and rewritten only where it names the upstream's model."""
    assert isinstance(opened.first, list) and opened.rest is not None
    lines: list[str] = opened.first
    try:
        while True:
            yield "\n".join(_event_line(line, count, alias, on_response_id) for line in lines).encode() + b"\n"
            try:
                lines = await anext(opened.rest)
            except StopAsyncIteration:
                break
        count.status = "ok"
    except (httpx.HTTPError, UpstreamError) as exc:
        count.status = "error"
        error = {"type": "error", "code": "upstream_error", "param": None,
                 "message": f"the upstream failed mid-stream: {type(exc).__name__}"}
        yield b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n"


def _event_line(line: str, count: Count, alias: str, on_response_id: Callable[[str], None]) -> str:
    if not line.startswith("data:"):
        return line
    if count.meter.first_token_at is None:
        count.meter.first_token_at = time.perf_counter()
    try:
        event = json.loads(line[5:])
    except ValueError:
        return line  # `[DONE]`, or the upstream's own business: passed on as it is
    count.observe(event, streamed=True)
    if (identifier := endpoints.response_id(event)) is not None:
        on_response_id(identifier)
    if endpoints.with_alias(event, alias):
        return "data: " + json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return line


async def relay_bytes(opened: Opened, count: Count) -> AsyncGenerator[bytes, None]:
    """Any other body, chunk by chunk as it comes; a plain-text answer (a transcript as `text`, `srt`, `vtt`)
    counted as generated text. A failure midway is re-raised: the server then cuts the connection."""
    assert isinstance(opened.first, bytes) and opened.rest is not None
    textual = opened.response.headers.get("content-type", "").startswith("text/")
    chunk = opened.first
    try:
        while chunk:
            if count.meter.first_token_at is None:
                count.meter.first_token_at = time.perf_counter()
            if textual:
                count.generated += count.count(chunk.decode("utf-8", "replace"))
            yield chunk
            chunk = await anext(opened.rest, b"")
        count.status = "ok"
    except httpx.HTTPError:
        count.status = "error"
        raise


async def settle(opened: Opened, count: Count) -> None:
    """After the client has its whole answer (or has gone): the usage row, then the upstream response closed."""
    try:
        count.finish(count.status or "cancelled")
    finally:
        with contextlib.suppress(httpx.HTTPError):
            await opened.response.aclose()
