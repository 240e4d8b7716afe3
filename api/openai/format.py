"""The OpenAI protocol's adapter to the chat core: a chat completion or completion body becomes a `Turn`, and the
core's results become OpenAI's JSON and stream chunks. Which of the two endpoints is described by one `Format`
(`CHAT`, `COMPLETION`), not by a flag threaded through every function."""

from __future__ import annotations

import json
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.background import BackgroundTask

from api import disconnects
from api.openai.logprobs import TextOffsets, chat_logprobs, completion_logprobs
from api.openai.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from api.openai.turns import chat_turn, completion_turn
from api.services.accounts.principal import Principal
from api.services.chat import generation as chat_generation
from api.services.chat import output
from api.services.chat.sampling import OPENAI_CHAT_DEFAULTS, OPENAI_COMPLETION_DEFAULTS, AliasDefaults
from api.services.chat.serving import Generation
from api.services.chat.turn import Sampling, Turn
from api.services.gateway.backends import Backend
from api.services.usage.writer import Reservation
from api.sse import sse_response
from engine.requests import TokenLogprob

if TYPE_CHECKING:
    from api.lifespan import AppServices

FINISH_REASONS = {"stop": "stop", "length": "length", "cancelled": "stop", "error": "stop",
                  "tool_calls": "tool_calls"}
DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class Format(ABC):
    """One OpenAI text endpoint: its upstream path, its objects' names, its ids, its server defaults, how its
    body becomes a turn and how a choice reads in its answers."""

    path: str  # below /v1, as an upstream serves it too
    object: str
    chunk_object: str
    id_prefix: str
    defaults: Sampling

    def new_id(self) -> str:
        return f"{self.id_prefix}-{uuid.uuid4().hex}"

    @abstractmethod
    def turn(self, body: Any) -> Turn: ...

    @abstractmethod
    def choice(self, text: str, tool_calls: list[output.CallResult] | None = None) -> dict[str, Any]:
        """A whole answer's choice body."""

    @abstractmethod
    def delta(self, content: str | None) -> dict[str, Any]:
        """A stream chunk's choice body."""

    @abstractmethod
    def logprobs(self, entries: list[TokenLogprob], offsets: TextOffsets) -> dict[str, Any]:
        """A choice's (or a chunk's) ``logprobs``: ``offsets`` follows the choice's text from chunk to chunk."""

    def opening(self) -> dict[str, Any] | None:
        """What each choice's stream opens with, if anything."""
        return None


class ChatFormat(Format):
    def turn(self, body: ChatCompletionRequest) -> Turn:
        return chat_turn(body)

    def choice(self, text: str, tool_calls: list[output.CallResult] | None = None) -> dict[str, Any]:
        if tool_calls:  # as OpenAI answers a turn of only calls: content null
            return {"message": {"role": "assistant", "content": text or None,
                                "tool_calls": [call.openai() for call in tool_calls]}}
        return {"message": {"role": "assistant", "content": text}}

    def delta(self, content: str | None) -> dict[str, Any]:
        return {"delta": {"content": content} if content is not None else {}}

    def opening(self) -> dict[str, Any] | None:
        return {"delta": {"role": "assistant", "content": ""}}

    def logprobs(self, entries: list[TokenLogprob], offsets: TextOffsets) -> dict[str, Any]:
        return chat_logprobs(entries)


class CompletionFormat(Format):
    def turn(self, body: CompletionRequest) -> Turn:
        return completion_turn(body)

    def choice(self, text: str, tool_calls: list[output.CallResult] | None = None) -> dict[str, Any]:
        return {"text": text}

    def delta(self, content: str | None) -> dict[str, Any]:
        return {"text": content or ""}

    def logprobs(self, entries: list[TokenLogprob], offsets: TextOffsets) -> dict[str, Any]:
        return completion_logprobs(entries, offsets)


CHAT = ChatFormat("/chat/completions", "chat.completion", "chat.completion.chunk", "chatcmpl",
                  OPENAI_CHAT_DEFAULTS)
COMPLETION = CompletionFormat("/completions", "text_completion", "text_completion", "cmpl",
                              OPENAI_COMPLETION_DEFAULTS)


async def begin(services: AppServices, session: AsyncSession | None, principal: Principal, model: str | None,
                body: SamplingFields, endpoint: Format, *, alias: AliasDefaults | None = None,
                backend: Backend | None = None, admit: bool = True, reservation: Reservation | None = None
                ) -> Generation:
    """The body's turn started on the engine (refusals raise before anything is sent)."""
    return await chat_generation.begin(services, session, principal, model, endpoint.turn(body),
                                       request_id=endpoint.new_id(), server=endpoint.defaults, alias=alias,
                                       backend=backend, admit=admit, reservation=reservation)


def response(generation: Generation, choices: list[output.ChoiceResult], endpoint: Format) -> dict[str, Any]:
    """The whole answer: a ``chat.completion`` (messages) or a ``text_completion`` (text)."""
    asked = generation.request.sampling.logprobs is not None
    return {"id": generation.request.request_id, "object": endpoint.object, "created": int(time.time()),
            "model": generation.backend.model, "system_fingerprint": None,
            "choices": [{"index": index, **endpoint.choice(item.text, item.tool_calls),
                         "logprobs": endpoint.logprobs(item.logprobs, TextOffsets()) if asked else None,
                         "finish_reason": FINISH_REASONS.get(item.finish_reason or "stop", "stop")}
                        for index, item in enumerate(choices)],
            "usage": output.usage(generation.meter)}


def split_opening(piece: output.ToolCallPiece) -> list[output.ToolCallPiece]:
    """A call's first piece as OpenAI sends it: the name with arguments "", then what arguments came with it."""
    if piece.id is None or not piece.arguments:
        return [piece]
    return [output.ToolCallPiece(piece.index, piece.call, "", piece.id, piece.name),
            output.ToolCallPiece(piece.index, piece.call, piece.arguments)]


def tool_call_delta(piece: output.ToolCallPiece) -> dict[str, Any]:
    """A call's piece as OpenAI streams it: the first with index, id, type, name and arguments "", later ones
    index and an arguments piece."""
    if piece.id is not None:
        return {"index": piece.call, "id": piece.id, "type": "function",
                "function": {"name": piece.name, "arguments": piece.arguments}}
    return {"index": piece.call, "function": {"arguments": piece.arguments}}


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def stream_chunks(generation: Generation, endpoint: Format, *, include_usage: bool) -> AsyncIterator[bytes]:
    """The SSE body: (chat: a role chunk per choice first) content chunks, a finish chunk per choice, the usage
    chunk when asked, then ``[DONE]`` (after an error frame too). A client that goes away cancels this, which
    stops the generation."""
    head = {"id": generation.request.request_id, "object": endpoint.chunk_object, "created": int(time.time()),
            "model": generation.backend.model, "system_fingerprint": None}

    asked = generation.request.sampling.logprobs is not None
    offsets = [TextOffsets() for _ in range(generation.request.sampling.n)]

    def chunk(index: int, body: dict[str, Any], finish: str | None, logprobs: dict[str, Any] | None = None
              ) -> bytes:
        return _sse({**head, "choices": [{"index": index, **body, "logprobs": logprobs, "finish_reason": finish}]})

    try:
        opening = endpoint.opening()
        if opening is not None:
            for index in range(generation.request.sampling.n):
                yield chunk(index, opening, None)
        async for result in output.results(generation):
            if isinstance(result, output.TextDelta):
                logprobs = endpoint.logprobs(list(result.logprobs), offsets[result.index]) if asked else None
                yield chunk(result.index, endpoint.delta(result.text), None, logprobs)
            elif isinstance(result, output.ToolCallPiece):
                for piece in split_opening(result):
                    yield chunk(result.index, {"delta": {"tool_calls": [tool_call_delta(piece)]}}, None)
            elif isinstance(result, output.Finished):
                yield chunk(result.index, endpoint.delta(None), FINISH_REASONS.get(result.reason, "stop"))
            else:
                # As the gateway ends an upstream's failed stream: the error, then [DONE] (no usage: it failed).
                yield _sse({"error": {"message": result.message, "type": "server_error", "param": None,
                                      "code": result.code}})
                yield DONE
                return
        if include_usage:
            yield _sse({**head, "choices": [], "usage": output.usage(generation.meter)})
        yield DONE
    finally:
        await generation.close()


async def answer(request: Request, generation: Generation, body: SamplingFields, endpoint: Format
                 ) -> dict[str, Any] | StreamingResponse:
    """The started generation as the OpenAI answer the body asked for: an SSE stream, or the whole response."""
    if body.stream:
        # The background close also covers a client gone before the body started (the chunks' cleanup never ran).
        return sse_response(stream_chunks(generation, endpoint, include_usage=body.include_usage),
                            background=BackgroundTask(generation.close))
    choices = await output.collect(generation, disconnects.abort_on_disconnect(request, generation.abort))
    return response(generation, choices, endpoint)

