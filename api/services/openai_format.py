"""OpenAI's shapes: requests turned into engine requests, results and stream chunks turned into OpenAI JSON."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from api.schemas.openai import (
    UNSUPPORTED_CHAT_FIELDS,
    UNSUPPORTED_COMPLETION_FIELDS,
    ChatCompletionRequest,
    CompletionRequest,
    SamplingFields,
)
from api.services.errors import InvalidInput
from api.services.serving import Choice, Generation, GenerationFailed, collect
from api.sse import sse_response
from engine.requests import ErrorEvent, FinishEvent, GenerationRequest, SamplingParams, TokenEvent

DEFAULT_CHAT_MAX_TOKENS = 512
DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's own default for /v1/completions
FINISH_REASONS = {"stop": "stop", "length": "length", "cancelled": "stop", "error": "stop"}


def refuse_unsupported(body: SamplingFields, fields: tuple[str, ...]) -> None:
    for name in fields:
        value = getattr(body, name)
        if value is not None and value is not False:
            raise InvalidInput(f"'{name}' is not supported by this server yet", param=name,
                               code="unsupported_parameter")


def refuse_unsupported_messages(body: ChatCompletionRequest) -> None:
    """The local engine takes text turns only: tool calls and results, and parts other than text, are refused
    naming the message field (an upstream alias forwards them as they are)."""
    for i, message in enumerate(body.messages):
        if message.role == "tool" or message.tool_call_id is not None:
            raise InvalidInput("tool results (role 'tool') are not supported by this server's engine yet",
                               param=f"messages[{i}].role", code="unsupported_parameter")
        if message.tool_calls:
            raise InvalidInput("tool calls are not supported by this server's engine yet",
                               param=f"messages[{i}].tool_calls", code="unsupported_parameter")
        if message.content is None:
            raise InvalidInput("a message needs content", param=f"messages[{i}].content", code="missing_field")
        for j, part in enumerate(message.content if isinstance(message.content, list) else []):
            if part.type != "text" or part.text is None:
                raise InvalidInput(f"'{part.type}' content parts are not supported by this server's engine yet",
                                   param=f"messages[{i}].content[{j}]", code="unsupported_parameter")


def sampling(body: SamplingFields, max_tokens: int | None, default_max_tokens: int) -> SamplingParams:
    return SamplingParams(
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p, top_k=body.top_k or 0,
        repetition_penalty=body.repetition_penalty or 1.0, presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty, seed=body.seed, max_tokens=max_tokens or default_max_tokens,
        stop=body.stop_strings(), n=body.n)


def chat_request(body: ChatCompletionRequest) -> GenerationRequest:
    refuse_unsupported(body, UNSUPPORTED_CHAT_FIELDS)
    refuse_unsupported_messages(body)
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    params = sampling(body, body.max_completion_tokens or body.max_tokens, DEFAULT_CHAT_MAX_TOKENS)
    return GenerationRequest(messages=messages, sampling=params, request_id=f"chatcmpl-{uuid.uuid4().hex}")


def completion_request(body: CompletionRequest) -> GenerationRequest:
    refuse_unsupported(body, UNSUPPORTED_COMPLETION_FIELDS)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise InvalidInput("send one prompt per request", param="prompt", code="invalid_value")
    params = sampling(body, body.max_tokens, DEFAULT_COMPLETION_MAX_TOKENS)
    return GenerationRequest(prompt=prompts[0], sampling=params, request_id=f"cmpl-{uuid.uuid4().hex}")


def usage_dict(generation: Generation) -> dict[str, int]:
    prompt, completion = generation.meter.prompt_tokens, generation.meter.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def response(generation: Generation, choices: list[Choice], *, chat: bool) -> dict[str, Any]:
    """The whole answer: a ``chat.completion`` (messages) or a ``text_completion`` (text)."""
    def choice(index: int, item: Choice) -> dict[str, Any]:
        text = "".join(item.text)
        body: dict[str, Any] = ({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
        return {"index": index, **body, "logprobs": None,
                "finish_reason": FINISH_REASONS.get(item.finish_reason or "stop", "stop")}

    return {"id": generation.request.request_id, "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": generation.backend.model, "system_fingerprint": None,
            "choices": [choice(index, item) for index, item in enumerate(choices)], "usage": usage_dict(generation)}


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


async def stream_chunks(generation: Generation, *, chat: bool, include_usage: bool) -> AsyncIterator[bytes]:
    """The SSE body: (chat: a role chunk per choice first) content chunks, a finish chunk per choice, the usage
    chunk when asked, then ``[DONE]``. A client that goes away cancels this, which stops the generation."""
    created = int(time.time())
    head = {"id": generation.request.request_id, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created, "model": generation.backend.model, "system_fingerprint": None}

    def chunk(index: int, content: str | None, finish: str | None, role: bool = False) -> bytes:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else (
                {"content": content} if content is not None else {})
            choice: dict[str, Any] = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": index, "text": content or "", "logprobs": None, "finish_reason": finish}
        return _sse({**head, "choices": [choice]})

    try:
        if chat:
            for index in range(generation.request.sampling.n):
                yield chunk(index, None, None, role=True)
        async for event in generation.events:
            generation.meter.observe(event)
            if isinstance(event, TokenEvent):
                if event.text:
                    yield chunk(event.index, event.text, None)
            elif isinstance(event, FinishEvent):
                yield chunk(event.index, None, FINISH_REASONS.get(event.finish_reason, "stop"))
            elif isinstance(event, ErrorEvent):
                failure = GenerationFailed(event.message)
                yield _sse({"error": {"message": failure.message, "type": "server_error", "param": None,
                                      "code": event.code}})
                return
        if include_usage:
            yield _sse({**head, "choices": [], "usage": usage_dict(generation)})
        yield DONE
    finally:
        await generation.close()


async def answer(request: Request, generation: Generation, body: SamplingFields, *, chat: bool
                 ) -> dict[str, Any] | StreamingResponse:
    """The started generation as the OpenAI answer the body asked for: an SSE stream, or the whole response."""
    if body.stream:
        # The background close also covers a client gone before the body started (the chunks' cleanup never ran).
        return sse_response(stream_chunks(generation, chat=chat, include_usage=body.include_usage),
                            background=BackgroundTask(generation.close))
    return response(generation, await collect(generation, request), chat=chat)
