"""A fake OpenAI-compatible upstream for the tests that check what reaches an upstream: it keeps the exact bytes of
every request body, and answers like a model with one tool, `lookup`: offered tools, it calls the tool (streamed,
its arguments in several deltas, or whole); given the tool's result, it answers in text. Asked for logprobs, it
sends them. `/v1/completions` echoes the prompt back."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODEL = "recorded-model"
CALL_ID = "call_lookup_1"
# The tool call's arguments as the upstream streams them: cut mid-key, mid-value and mid-escape.
ARGUMENT_PIECES = ['{"ci', 'ty": "Par', 'is", "unit": "cel', 'sius", "note": "a \\"quoted\\" ', 'word\\n"}']
ANSWER = "It is 21 degrees in Paris."
USAGE = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}


class RecordingUpstream:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []  # every POST body, byte for byte, in arrival order
        self.base_url = ""  # up to and including /v1, once served
        self.app = Starlette(routes=[Route("/v1/models", self.models), Route("/v1/chat/completions", self.chat,
                                                                             methods=["POST"]),
                                     Route("/v1/completions", self.completions, methods=["POST"])])

    def last(self) -> dict[str, Any]:
        return json.loads(self.bodies[-1])

    async def models(self, _request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "fake"}]})

    async def chat(self, request: Request) -> Response:
        self.bodies.append(await request.body())
        body = json.loads(self.bodies[-1])
        calls_tool = bool(body.get("tools")) and body["messages"][-1].get("role") != "tool"
        head = {"id": "chatcmpl-rec", "created": int(time.time()), "model": MODEL}
        logprobs = _logprobs(body.get("top_logprobs") or 0) if body.get("logprobs") else None
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": None if calls_tool else ANSWER}
            if calls_tool:
                message["tool_calls"] = [{"id": CALL_ID, "type": "function", "function": {
                    "name": "lookup", "arguments": "".join(ARGUMENT_PIECES)}}]
            return JSONResponse({**head, "object": "chat.completion", "usage": USAGE, "choices": [{
                "index": 0, "message": message, "logprobs": logprobs,
                "finish_reason": "tool_calls" if calls_tool else "stop"}]})
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(_sse(head, calls_tool, logprobs, wants_usage), media_type="text/event-stream")

    async def completions(self, request: Request) -> Response:
        self.bodies.append(await request.body())
        body = json.loads(self.bodies[-1])
        return JSONResponse({"id": "cmpl-rec", "object": "text_completion", "created": int(time.time()),
                             "model": MODEL, "usage": USAGE, "choices": [{
                                 "index": 0, "text": json.dumps(body["prompt"]), "logprobs": None,
                                 "finish_reason": "stop"}]})


def _logprobs(top: int) -> dict[str, Any]:
    return {"content": [{"token": "It", "logprob": -0.25, "bytes": [73, 116], "top_logprobs": [
        {"token": "It", "logprob": -0.25, "bytes": [73, 116]}, {"token": "The", "logprob": -1.5, "bytes": None},
    ][:top]}]}


def _sse(head: dict[str, Any], calls_tool: bool, logprobs: dict[str, Any] | None, wants_usage: bool
         ) -> Iterator[bytes]:
    def event(choice: dict[str, Any] | None, **extra: Any) -> bytes:
        payload = {**head, "object": "chat.completion.chunk", "choices": [choice] if choice else [], **extra}
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    yield event({"index": 0, "delta": {"role": "assistant", "content": None if calls_tool else ""},
                 "finish_reason": None})
    if calls_tool:
        yield event({"index": 0, "delta": {"tool_calls": [{"index": 0, "id": CALL_ID, "type": "function",
                                                           "function": {"name": "lookup", "arguments": ""}}]},
                     "finish_reason": None})
        for piece in ARGUMENT_PIECES:
            yield event({"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]},
                         "finish_reason": None})
    else:
        for word in ANSWER.split(" "):
            yield event({"index": 0, "delta": {"content": word + " "}, "logprobs": logprobs, "finish_reason": None})
    yield event({"index": 0, "delta": {}, "finish_reason": "tool_calls" if calls_tool else "stop"})
    if wants_usage:
        yield event(None, usage=USAGE)
    yield b"data: [DONE]\n\n"
