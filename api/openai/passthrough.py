"""Forwarding an OpenAI request to an upstream deployment of an alias, and its answer back, with only the `model`
field rewritten (the alias the client asked for).

Streams go out chunk by chunk as they arrive. The usage the upstream reports is used (the stream asks for it with
`stream_options.include_usage`, and the usage chunk reaches the client only if it asked too); without a report,
tokens are counted (the local model's tokenizer, else about four characters a token) and the usage row says
`estimated`. A deployment that cannot be reached, times out or answers 5xx before its first chunk hands over to
the next; after that, a failure ends the stream with an error frame and `[DONE]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi.responses import Response

from api.openai.payloads import Texts, UsageReader, choice_texts, prompt_text, usage_of
from api.services.gateway.gateway import Deployment
from api.services.usage.metering import Meter
from engine.errors import UpstreamError, UpstreamUnavailable
from engine.upstream import estimate_tokens

__all__ = ["Opened", "Relay", "Texts", "UsageReader", "UpstreamError", "choice_texts", "open_stream", "prompt_text",
           "relay_json", "relay_stream", "settle", "usage_of"]

DONE = b"data: [DONE]\n\n"
# How long the end of an upstream body may take after its [DONE] before its connection is closed instead.
DRAIN_S = 1.0


@dataclass
class Opened:
    deployment: Deployment
    response: httpx.Response
    first: list[str]  # stream: the lines read before committing to this deployment
    rest: AsyncIterator[list[str]] | None = None  # stream: the same reader, where reading goes on


async def open_stream(deployment: Deployment, path: str, body: dict[str, Any], *, stream_usage: bool = True,
                      raw: RawBody | None = None) -> Opened:
    """Open the upstream with ``body`` as the client sent it, but for its model (and, for a stream of an endpoint
    that reports usage only when asked, ``stream_options.include_usage``, the rest of the client's
    ``stream_options`` kept), then read up to its first data line; raises `UpstreamUnavailable` if it fails
    first. ``raw``: the body goes as those bytes instead (``body`` is then only what was read of them)."""
    assert deployment.provider is not None
    stream = body.get("stream") is True
    if raw is not None:
        response = await deployment.provider.upstream.send(
            "POST", path, content=raw.encode(deployment.upstream_model or ""), content_type=raw.content_type)
    else:
        upstream_body = {**body, "model": deployment.upstream_model}
        if stream and stream_usage:
            given = body.get("stream_options")
            upstream_body["stream_options"] = {**(given if isinstance(given, dict) else {}), "include_usage": True}
        response = await deployment.provider.upstream.open(path, upstream_body)
    first: list[str] = []
    if not stream:
        return Opened(deployment, response, first)
    batches = line_batches(response)
    try:
        async for lines in batches:
            first.extend(lines)
            if any(line.startswith("data:") for line in lines):
                break
        else:
            raise UpstreamUnavailable(f"{deployment.provider.name} ended the stream before any data")
    except httpx.HTTPError as exc:
        await response.aclose()
        raise UpstreamUnavailable(f"{deployment.provider.name} failed before its first chunk: "
                                  f"{type(exc).__name__}") from exc
    except BaseException:  # UpstreamUnavailable, or a cancel because the client left: the response goes nowhere
        await response.aclose()
        raise
    return Opened(deployment, response, first, batches)


class Relay:
    """One forwarded request's accounting: rewrites chunks, counts tokens, and records usage once. ``texts`` and
    ``usage`` read the endpoint's shapes; ``done_marker`` False: the stream ends at its end, not at ``[DONE]``;
    ``observe`` is shown every answer or event parsed (before its model is rewritten)."""

    def __init__(self, meter: Meter, alias: str, prompt_text: str, count: Callable[[str], int] | None,
                 release: Callable[[], None], upstream_model: str | None = None, *, texts: Texts = choice_texts,
                 usage: UsageReader = usage_of, done_marker: bool = True,
                 observe: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.meter = meter
        self.observe = observe  # sees each answer or event read whole (the Responses API's ids, to route by)
        self.release = release
        self.texts = texts
        self.usage = usage
        self.done_marker = done_marker
        # Plain content chunks after the first are forwarded without a JSON round trip: the upstream's model name
        # is swapped for the alias in the text. They are parsed (for counting) only if no usage report comes.
        quoted = json.dumps(upstream_model or "")
        self.upstream_names = (f'"model":{quoted}', f'"model": {quoted}')
        self.alias_name = f'"model":{json.dumps(alias, ensure_ascii=False)}'
        self.unparsed: list[str] = []
        self.alias = alias
        self.prompt_text = prompt_text  # counted only if the upstream reports no usage
        self.count = count or estimate_tokens
        self.reported = False
        self.status: str | None = None

    def rewrite(self, chunk: dict[str, Any]) -> dict[str, Any]:
        if self.observe is not None:
            self.observe(chunk)
        if "model" in chunk:
            chunk["model"] = self.alias
        if isinstance(chunk.get("response"), dict) and "model" in chunk["response"]:  # Responses API events
            chunk["response"]["model"] = self.alias
        reported = self.usage(chunk)
        if reported is not None:
            self.reported = True
            self.meter.prompt_tokens, completion = reported
            self.meter.completion = {0: completion}
        return chunk

    def observe_delta(self, chunk: dict[str, Any]) -> None:
        for index, piece in self.texts(chunk):
            if self.meter.first_token_at is None:
                self.meter.mark_first_token()
            if not self.reported:
                self.meter.completion[index] = self.meter.completion.get(index, 0) + self.count(piece)

    def forward(self, data: str, *, include_usage: bool) -> bytes | None:
        """One upstream event as the client gets it (None: not for the client); raises on an upstream error."""
        if (quick := self.quick_rewrite(data)) is not None:
            return quick
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise UpstreamError("the upstream sent an event that is not JSON") from exc
        if not isinstance(chunk, dict):
            return None
        if "error" in chunk and not chunk.get("choices"):
            error = chunk["error"]
            raise UpstreamError(str(error.get("message", "the upstream reported an error"))
                                if isinstance(error, dict) else str(error))
        try:
            self.observe_delta(chunk)
            self.rewrite(chunk)
        except (AttributeError, TypeError, ValueError) as exc:  # e.g. "choices": [1]: an error frame, not a cut
            raise UpstreamError("the upstream sent an event of the wrong shape") from exc
        if not chunk.get("choices") and "usage" in chunk and not include_usage:
            return None  # asked for our accounting, not by the client
        if not include_usage and chunk.get("usage") is not None and chunk.get("choices"):
            chunk["usage"] = None
        return b"data: " + json.dumps(chunk, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"

    def quick_rewrite(self, data: str) -> bytes | None:
        """The SSE event for a plain content chunk, rewritten as text; None when it needs a real look (the first
        content, usage, errors, or an upstream that spells its model differently)."""
        if self.meter.first_token_at is None or '"error"' in data or (
                '"usage"' in data and '"usage":null' not in data and '"usage": null' not in data):
            return None
        for name in self.upstream_names:
            if name in data:
                if not self.reported:
                    self.unparsed.append(data)
                return b"data: " + data.replace(name, self.alias_name, 1).encode() + b"\n\n"
        return None

    def finish(self, status: str | None = None) -> None:
        self.release()
        if self.meter.recorded:
            return
        if not self.reported:
            for data in self.unparsed:  # forwarded unread: count them now that no report came
                with contextlib.suppress(ValueError):
                    chunk = json.loads(data)
                    if isinstance(chunk, dict):
                        self.observe_delta(chunk)
        if not self.reported:
            self.meter.count_source = "estimated"
            self.meter.prompt_tokens = self.meter.prompt_tokens or self.count(self.prompt_text)
        else:
            self.meter.count_source = "upstream"
        self.meter.record(status or self.status)


async def relay_stream(opened: Opened, relay: Relay, *, include_usage: bool) -> AsyncGenerator[bytes, None]:
    """The client's SSE body: what arrived in one read from the upstream goes out in one write (as a byte-for-byte
    pass-through would), each event rewritten. A client that goes away cancels this, and closing the upstream
    response closes its connection: the upstream stops at once. After a clean [DONE] the upstream response is
    left to `settle`."""
    response = opened.response
    assert opened.rest is not None
    finished = False
    event_name: str | None = None
    lines = opened.first  # what was read before committing to this deployment, then the rest
    try:
        while True:
            out: list[bytes] = []
            failure: UpstreamError | None = None
            for line in lines:
                if line.startswith("event:"):  # the Responses API names its events; the name goes before the data
                    event_name = line
                    continue
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    finished = True
                    relay.status = "ok"
                    out.append(DONE)  # in the same write as the events before it
                    break
                try:
                    piece = relay.forward(data, include_usage=include_usage)
                except UpstreamError as exc:
                    failure = exc
                    break
                if piece:
                    out.append(f"{event_name}\n".encode() + piece if event_name else piece)
                event_name = None
            if out:
                yield b"".join(out)
            if failure is not None:
                raise failure
            if finished:
                break
            # Read directly, not through a wrapping generator: one left suspended at the end is finalized by the
            # loop in a task of its own.
            try:
                lines = await anext(opened.rest)
            except StopAsyncIteration:
                if not relay.done_marker:
                    finished, relay.status = True, "ok"
                break
        if not finished:
            raise UpstreamError("the upstream closed the stream before [DONE]")
    except (httpx.HTTPError, UpstreamError) as exc:
        relay.status = "error"
        message = exc.message if isinstance(exc, UpstreamError) else f"the upstream failed: {type(exc).__name__}"
        yield b"data: " + json.dumps({"error": {"message": message, "type": "server_error", "param": None,
                                                "code": "upstream_error"}}).encode() + b"\n\n"
        yield DONE
    finally:
        if relay.status != "ok":
            await response.aclose()
        if relay.status is None:
            relay.status = "cancelled"  # the client went away first


async def settle(opened: Opened, relay: Relay) -> None:
    """After the client has its whole answer (or has gone): the usage row, then, after a clean [DONE], the rest of
    the upstream body (the end of its chunked encoding) read before closing. A response closed before its end
    closes its connection: every stream paid a new TCP connect to the upstream, and left its readers for the
    loop to finalize. Read to the end, the connection goes back to the pool."""
    if relay.status is None:
        relay.status = "cancelled"  # the client left while an event was being written, the relay never resumed
    relay.finish()
    try:
        if relay.status == "ok" and opened.rest is not None:
            with contextlib.suppress(httpx.HTTPError, TimeoutError):
                async with asyncio.timeout(DRAIN_S):
                    async for _ in opened.rest:
                        pass  # anything an upstream sends after its [DONE] is dropped
    finally:
        await opened.response.aclose()


async def line_batches(response: httpx.Response) -> AsyncIterator[list[str]]:
    """The body's complete lines, a list per read from the network (an event's bytes never straddle a line end,
    so no character is cut)."""
    pending = b""
    async for chunk in response.aiter_bytes():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if lines:
            yield [line.rstrip(b"\r").decode("utf-8", "replace") for line in lines]
    if pending:
        yield [pending.rstrip(b"\r").decode("utf-8", "replace")]


async def relay_json(opened: Opened, relay: Relay) -> Response:
    """The upstream's JSON answer with the alias as its model, as ready bytes (no second encoding pass)."""
    try:
        payload = json.loads(await opened.response.aread())
    except (ValueError, httpx.HTTPError) as exc:
        relay.finish("error")
        raise UpstreamUnavailable("the upstream's answer was not JSON") from exc
    finally:
        await opened.response.aclose()
    if not isinstance(payload, dict):
        relay.finish("error")
        raise UpstreamUnavailable("the upstream's answer was not a JSON object")
    try:
        relay.rewrite(payload)
        if not relay.reported:
            for index, text in relay.texts(payload):
                relay.meter.completion[index] = relay.meter.completion.get(index, 0) + relay.count(text)
    except (AttributeError, TypeError, ValueError) as exc:
        relay.finish("error")
        raise UpstreamError("the upstream's answer was of the wrong shape") from exc
    relay.finish("ok")
    return Response(json.dumps(payload, separators=(",", ":"), ensure_ascii=False), media_type="application/json")


# --- Bodies other than JSON: a multipart upload sent as its bytes, an answer that is neither JSON nor an event
# stream (speech audio, a plain-text transcript) relayed as its bytes.


@dataclass(frozen=True)
class RawBody:
    """A request body forwarded as bytes: ``encode(model)`` is the client's body with its model set to that."""

    content_type: str
    encode: Callable[[str], bytes]


def is_json(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"


async def relay_bytes(opened: Opened, relay: Relay) -> AsyncGenerator[bytes, None]:
    """The upstream's body chunk by chunk as it arrives; a plain-text one (a transcript as `text`, `srt`, `vtt`)
    counted as generated text when no usage is reported (none can be, in a body that is not JSON). A failure
    midway is raised on: the server then cuts the connection, so that the client cannot take a truncated file for
    a whole one."""
    textual = opened.response.headers.get("content-type", "").startswith("text/")
    try:
        async for chunk in opened.response.aiter_raw():
            if relay.meter.first_token_at is None:
                relay.meter.mark_first_token()
            if textual:
                relay.meter.completion[0] = relay.meter.completion.get(0, 0) + relay.count(
                    chunk.decode("utf-8", "replace"))
            yield chunk
        relay.status = "ok"
    except httpx.HTTPError:
        relay.status = "error"
        raise
