"""OpenAI-compatible upstream servers (vLLM, TGI, llama.cpp server, LM Studio, Ollama's `/v1`, OpenAI, another
LLMWS): opening their streams for the gateway to forward, and the same engine interface as the local model.

One `httpx.AsyncClient` is shared by every upstream (connection pooling). A failure before the upstream answers
(connection refused or reset, a timeout, a 5xx) raises `UpstreamUnavailable`, which the router answers by trying
the next deployment; anything after that belongs to the stream it happened in.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from engine.errors import InvalidParameters, UpstreamError, UpstreamRefused, UpstreamUnavailable
from engine.interface import EngineStats, Health
from engine.requests import (
    Constraint,
    EngineEvent,
    ErrorEvent,
    FinishEvent,
    FinishReason,
    GenerationRequest,
    StartEvent,
    TokenEvent,
    Usage,
)

CONNECT_TIMEOUT_S = 5.0
FINISH_REASONS: dict[str, FinishReason] = {"stop": "stop", "length": "length", "eos": "stop"}


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    base_url: str  # up to and including `/v1`
    api_key: str | None = None
    timeout_s: float = 60.0


class Upstream:
    def __init__(self, config: UpstreamConfig, http: httpx.AsyncClient) -> None:
        self.config = config
        self.http = http
        self._base = config.base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._timeout = httpx.Timeout(config.timeout_s, connect=min(CONNECT_TIMEOUT_S, config.timeout_s))

    async def list_models(self) -> list[str]:
        try:
            response = await self.http.get(f"{self._base}/models", headers=self._headers, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"{self.config.name}: {_describe(exc)}") from exc
        if response.status_code != 200:
            raise UpstreamUnavailable(f"{self.config.name}: GET /models answered {response.status_code}")
        try:
            return [str(model["id"]) for model in response.json()["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamUnavailable(f"{self.config.name}: GET /models answered something not a model list"
                                      ) from exc

    async def open(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST ``body`` and return the response once its headers are in, its body still to read (the caller
        closes it). 4xx raises `UpstreamRefused` with the upstream's message."""
        request = self.http.build_request("POST", f"{self._base}{path}", json=body, headers=self._headers,
                                          timeout=self._timeout)
        return await self._answer(request)

    async def send(self, method: str, path: str, *, content: bytes | None = None, content_type: str | None = None,
                   query: str = "") -> httpx.Response:
        """Like `open`, for a body sent exactly as given (JSON already encoded, a multipart upload) or none (GET,
        DELETE); ``query`` is the client's query string, passed on."""
        headers = {**self._headers, **({"Content-Type": content_type} if content_type else {})}
        url = f"{self._base}{path}" + (f"?{query}" if query else "")
        request = self.http.build_request(method, url, content=content, headers=headers, timeout=self._timeout)
        return await self._answer(request)

    async def _answer(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"{self.config.name}: {_describe(exc)}") from exc
        if response.status_code >= 400:
            try:
                detail = (await response.aread()).decode("utf-8", "replace")
            except httpx.HTTPError:
                detail = ""
            finally:
                await response.aclose()
            if response.status_code >= 500 or response.status_code in (408, 429):
                raise UpstreamUnavailable(f"{self.config.name} answered {response.status_code}")
            raise UpstreamRefused(response.status_code, _error_message(detail) or
                                  f"{self.config.name} refused the request ({response.status_code})")
        return response


class UpstreamModel:
    """One upstream model behind the engine interface (native chat and WebSocket sessions use it; the OpenAI
    routes forward the upstream's own chunks instead). ``count_tokens`` estimates when the upstream reports no
    usage."""

    def __init__(self, upstream: Upstream, model: str, count_tokens: Callable[[str], int] | None = None) -> None:
        self.upstream = upstream
        self.model = model
        self.count_tokens = count_tokens or estimate_tokens
        self._open: dict[str, httpx.Response] = {}
        self._closing: set[asyncio.Task[None]] = set()  # held until done, so they are not collected midway

    async def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        if request.prompt_ids is not None:
            raise InvalidParameters("an upstream model takes messages or a prompt, not token ids", param="prompt_ids")
        params = request.sampling
        body: dict[str, Any] = {
            "model": self.model, "stream": True, "stream_options": {"include_usage": True},
            "temperature": params.temperature, "top_p": params.top_p, "max_tokens": params.max_tokens, "n": params.n,
            "presence_penalty": params.presence_penalty, "frequency_penalty": params.frequency_penalty,
            **({"seed": params.seed} if params.seed is not None else {}),
            **({"stop": list(params.stop)} if params.stop else {}),
        }
        if request.constraint is not None:
            body.update(constraint_fields(request.constraint))
        if request.messages is not None:
            path, body["messages"] = "/chat/completions", request.messages
        else:
            path, body["prompt"] = "/completions", request.prompt
        response = await self.upstream.open(path, body)
        self._open[request.request_id] = response
        texts: dict[int, list[str]] = {}
        reasons: dict[int, FinishReason] = {}
        usage: Usage | None = None
        try:
            yield StartEvent(request.request_id, 0, params.max_tokens)
            async for chunk in sse_json(response):
                for choice in chunk.get("choices") or []:
                    index = int(choice.get("index", 0))
                    piece = (choice.get("delta") or {}).get("content") if "delta" in choice else choice.get("text")
                    if piece:
                        texts.setdefault(index, []).append(piece)
                        yield TokenEvent(request.request_id, index, piece, (), self.count_tokens(piece))
                    if choice.get("finish_reason"):
                        reasons[index] = FINISH_REASONS.get(choice["finish_reason"], "stop")
                if isinstance(chunk.get("usage"), dict):
                    usage = Usage(int(chunk["usage"].get("prompt_tokens") or 0),
                                  int(chunk["usage"].get("completion_tokens") or 0))
            for index in range(params.n):
                counted = usage or Usage(0, self.count_tokens("".join(texts.get(index, []))))
                per_choice = Usage(counted.prompt_tokens, counted.completion_tokens // params.n) if usage else counted
                yield FinishEvent(request.request_id, index, reasons.get(index, "stop"), per_choice)
        except (httpx.HTTPError, UpstreamError) as exc:
            if request.request_id in self._open:  # not aborted by us
                yield ErrorEvent(request.request_id, f"the upstream failed mid-stream: {_describe(exc)}",
                                 "upstream_error")
        finally:
            self._open.pop(request.request_id, None)
            await response.aclose()

    def abort(self, request_id: str) -> None:
        """Close the request's upstream response (and so its connection: the upstream stops at once); the reader
        of the stream then ends without an error event. Called from the event loop, like every engine abort."""
        response = self._open.pop(request_id, None)
        if response is not None:
            task = asyncio.get_running_loop().create_task(response.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def check_health(self) -> Health:
        try:
            models = await self.upstream.list_models()
        except UpstreamError as exc:
            return Health(ok=False, detail=exc.message)
        return Health(ok=self.model in models, detail=f"{len(models)} models upstream")

    def stats(self) -> EngineStats:
        return EngineStats(queue_depth=0, running=len(self._open), batch_size=0, tokens_per_s=0.0,
                           kv_cache_bytes=0)


def constraint_fields(constraint: Constraint) -> dict[str, Any]:
    """A constraint as an OpenAI-compatible upstream takes it: ``response_format`` for JSON, vLLM's
    ``structured_outputs`` for the rest (an upstream that knows neither refuses or ignores them: its answer)."""
    if constraint.kind == "json_object":
        return {"response_format": {"type": "json_object"}}
    if constraint.kind == "json_schema":
        return {"response_format": {"type": "json_schema", "json_schema": {
            "name": "response", "schema": json.loads(constraint.spec), "strict": True}}}
    spec: Any = json.loads(constraint.spec) if constraint.kind == "choice" else constraint.spec
    return {"structured_outputs": {constraint.kind: spec}}


async def sse_json(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of an OpenAI-style event stream, until `[DONE]`. A line that is not JSON is an error."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise UpstreamError("the upstream sent an event that is not JSON") from exc
        if isinstance(chunk, dict) and "error" in chunk and not chunk.get("choices"):
            raise UpstreamError(_error_message(data) or "the upstream reported an error")
        if isinstance(chunk, dict):
            yield chunk


def estimate_tokens(text: str) -> int:
    """About four characters a token, for English text: used only where no tokenizer and no report exist."""
    return max(1, round(len(text) / 4)) if text else 0


def _error_message(detail: str) -> str | None:
    try:
        parsed = json.loads(detail)
    except ValueError:
        return detail.strip()[:500] or None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or "")[:500] or None
    if isinstance(error, str):
        return error[:500]
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused"
    return type(exc).__name__

