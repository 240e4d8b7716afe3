"""A fake OpenAI-compatible upstream for the endpoints beyond chat (embeddings, responses, audio, images,
moderations, vLLM's rerank and score), for the gateway's tests: each answers in its real shape, and every request
is recorded as it arrived (path, content type, raw body), so a test can compare it with what the client sent.

Model `fake-fail` answers 500 everywhere, as does a path in `fail_next` once (a deployment to fail over from);
`fake-quiet` never reports usage; speech streams wait after their first chunk while `hold_speech` is clear.
Stored responses live in this instance only: a follow-up (`previous_response_id`, `GET /v1/responses/{id}`) that
reaches another instance is a 404, as it would be on a real second server.
"""

from __future__ import annotations

import asyncio
import base64
import email.parser
import email.policy
import hashlib
import json
import struct
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from bench.fake_openai import serve_in_thread

EMBEDDING = [0.25, -0.5, 0.125]
ANSWER = ["The", " fake", " upstream", " responds", "."]
TRANSCRIPT = "hello from the fake transcriber"
SPEECH_CHUNKS = 16  # the speech body comes in this many chunks of 4 KiB


@dataclass(frozen=True)
class Seen:
    path: str
    method: str
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def form_fields(seen: Seen) -> dict[str, str]:
    """The plain fields of a multipart upload, read with the standard library's MIME parser (independent of the
    gateway's own reader)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {seen.content_type}\r\n\r\n".encode() + seen.body)
    return {part.get_param("name", header="content-disposition"): part.get_content()
            for part in message.iter_parts() if not part.get_filename()}


def speech_bytes(text: str) -> bytes:
    """The fake's "audio" for a text: deterministic, not valid UTF-8, every byte value present."""
    seed = hashlib.sha256(text.encode()).digest()
    return b"".join(hashlib.sha256(seed + index.to_bytes(4, "big")).digest() for index in range(SPEECH_CHUNKS * 128))


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion,
            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}


class FakeEndpointsUpstream:
    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.seen: list[Seen] = []
        self.stored: dict[str, dict[str, Any]] = {}
        self.fail_next: set[str] = set()  # paths that answer 500 to their next request
        # Cleared: speech streams wait after their first chunk until it is set again.
        self.hold_speech = threading.Event()
        self.hold_speech.set()
        self.app = Starlette(routes=[
            Route("/v1/models", self.models),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/v1/responses", self.responses, methods=["POST"]),
            Route("/v1/responses/{id}", self.stored_response, methods=["GET", "DELETE"]),
            Route("/v1/responses/{id}/input_items", self.input_items),
            Route("/v1/responses/{id}/cancel", self.cancel, methods=["POST"]),
            Route("/v1/audio/transcriptions", self.transcription, methods=["POST"]),
            Route("/v1/audio/translations", self.transcription, methods=["POST"]),
            Route("/v1/audio/speech", self.speech, methods=["POST"]),
            Route("/v1/images/generations", self.images, methods=["POST"]),
            Route("/v1/moderations", self.moderations, methods=["POST"]),
            Route("/v1/rerank", self.rerank, methods=["POST"]),
            Route("/v1/score", self.score, methods=["POST"]),
        ])
        self._server: uvicorn.Server | None = None
        self.base_url = ""

    def start(self) -> str:
        self._server, root = serve_in_thread(self.app)
        self.base_url = f"{root}/v1"
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    def last(self, path: str) -> Seen:
        return next(seen for seen in reversed(self.seen) if seen.path == path)

    async def _record(self, request: Request) -> Seen:
        seen = Seen(request.url.path, request.method, request.headers.get("content-type", ""), await request.body())
        self.seen.append(seen)
        return seen

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake-any", "object": "model", "created": 0,
                                                         "owned_by": self.name}]})

    async def _json(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        body = (await self._record(request)).json()
        if body.get("model") == "fake-fail" or request.url.path in self.fail_next:
            self.fail_next.discard(request.url.path)
            return body, JSONResponse({"error": {"message": "the fake upstream fails on purpose"}}, status_code=500)
        return body, None

    async def embeddings(self, request: Request) -> Response:
        body, failed = await self._json(request)
        if failed:
            return failed
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        packed = base64.b64encode(struct.pack(f"<{len(EMBEDDING)}f", *EMBEDDING)).decode()
        vector: Any = packed if body.get("encoding_format") == "base64" else EMBEDDING
        answer = {"object": "list", "model": body["model"], "data": [
            {"object": "embedding", "index": index, "embedding": vector} for index in range(len(inputs))]}
        if body["model"] != "fake-quiet":
            answer["usage"] = {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)}
        return JSONResponse(answer)

    async def responses(self, request: Request) -> Response:
        body, failed = await self._json(request)
        if failed:
            return failed
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.stored:
            return JSONResponse({"error": {"message": f"Previous response with id '{previous}' not found.",
                                           "type": "invalid_request_error", "param": "previous_response_id",
                                           "code": "previous_response_not_found"}}, status_code=404)
        identifier = f"resp_{uuid.uuid4().hex}"
        message = {"type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": "".join(ANSWER), "annotations": []}]}
        response = {"id": identifier, "object": "response", "created_at": int(time.time()), "status": "completed",
                    "model": body["model"], "output": [message], "previous_response_id": previous,
                    "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "error": None,
                    "incomplete_details": None, "instructions": body.get("instructions"), "metadata": {},
                    "temperature": body.get("temperature"), "top_p": body.get("top_p"), "text": {"format": {
                        "type": "text"}}, "usage": None if body["model"] == "fake-quiet" else usage(11, len(ANSWER))}
        self.stored[identifier] = {**response, "input": body.get("input")}
        if not body.get("stream"):
            return JSONResponse(response)
        return StreamingResponse(self._response_events(response, message), media_type="text/event-stream")

    async def _response_events(self, response: dict[str, Any], message: dict[str, Any]) -> AsyncIterator[bytes]:
        def event(payload: dict[str, Any]) -> bytes:
            return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()

        started = {**response, "status": "in_progress", "output": [], "usage": None}
        yield event({"type": "response.created", "sequence_number": 0, "response": started})
        for number, piece in enumerate(ANSWER, start=1):
            yield event({"type": "response.output_text.delta", "sequence_number": number, "item_id": message["id"],
                         "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []})
            await asyncio.sleep(0)
        yield event({"type": "response.completed", "sequence_number": len(ANSWER) + 1, "response": response})

    async def stored_response(self, request: Request) -> Response:
        await self._record(request)
        identifier = request.path_params["id"]
        if identifier not in self.stored:
            return JSONResponse({"error": {"message": "no such response", "type": "invalid_request_error"}},
                                status_code=404)
        if request.method == "DELETE":
            del self.stored[identifier]
            return JSONResponse({"id": identifier, "object": "response.deleted", "deleted": True})
        return JSONResponse({key: value for key, value in self.stored[identifier].items() if key != "input"})

    async def cancel(self, request: Request) -> Response:
        await self._record(request)
        stored = self.stored.get(request.path_params["id"])
        if stored is None:
            return JSONResponse({"error": {"message": "no such response"}}, status_code=404)
        return JSONResponse({key: value for key, value in stored.items() if key != "input"} | {"status": "cancelled"})

    async def input_items(self, request: Request) -> Response:
        await self._record(request)
        stored = self.stored.get(request.path_params["id"])
        if stored is None:
            return JSONResponse({"error": {"message": "no such response"}}, status_code=404)
        text = stored["input"] if isinstance(stored["input"], str) else json.dumps(stored["input"])
        item = {"type": "message", "id": "msg_in", "role": "user", "status": "completed",
                "content": [{"type": "input_text", "text": text}]}
        return JSONResponse({"object": "list", "data": [item], "first_id": "msg_in", "last_id": "msg_in",
                             "has_more": False})

    async def transcription(self, request: Request) -> Response:
        fields = form_fields(await self._record(request))
        if fields.get("model") == "fake-fail":
            return JSONResponse({"error": {"message": "the fake upstream fails on purpose"}}, status_code=500)
        if fields.get("response_format") == "text":
            return PlainTextResponse(TRANSCRIPT)
        answer: dict[str, Any] = {"text": TRANSCRIPT}
        if fields.get("model") != "fake-quiet":
            answer["usage"] = {"type": "tokens", "input_tokens": 40, "output_tokens": 6, "total_tokens": 46}
        return JSONResponse(answer)

    async def speech(self, request: Request) -> Response:
        body, failed = await self._json(request)
        if failed:
            return failed
        audio = speech_bytes(body["input"])

        async def chunks() -> AsyncIterator[bytes]:
            step = len(audio) // SPEECH_CHUNKS
            for start in range(0, len(audio), step):
                yield audio[start:start + step]
                if not self.hold_speech.is_set():
                    await asyncio.to_thread(self.hold_speech.wait, 30)

        return StreamingResponse(chunks(), media_type="audio/mpeg")

    async def images(self, request: Request) -> Response:
        body, failed = await self._json(request)
        if failed:
            return failed
        picture = base64.b64encode(b"\x89PNG fake image").decode()
        return JSONResponse({"created": int(time.time()), "data": [{"b64_json": picture}] * int(body.get("n", 1)),
                             "usage": usage(9, 4160)})

    async def moderations(self, request: Request) -> Response:
        body, failed = await self._json(request)
        if failed:
            return failed
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        result = {"flagged": False, "categories": {"violence": False}, "category_scores": {"violence": 0.01},
                  "category_applied_input_types": {"violence": ["text"]}}
        return JSONResponse({"id": f"modr-{uuid.uuid4().hex}", "model": body["model"],
                             "results": [result] * len(inputs)})

    async def rerank(self, request: Request) -> Response:
        body, failed = await self._json(request)
        if failed:
            return failed
        results = [{"index": index, "document": {"text": text}, "relevance_score": 1.0 / (index + 1)}
                   for index, text in enumerate(body["documents"])]
        return JSONResponse({"id": f"rerank-{uuid.uuid4().hex}", "model": body["model"], "results": results,
                             "usage": {"total_tokens": 5 * len(results)}})

    async def score(self, request: Request) -> Response:
        body, failed = await self._json(request)
        if failed:
            return failed
        seconds = body["text_2"] if isinstance(body["text_2"], list) else [body["text_2"]]
        return JSONResponse({"id": f"score-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                             "model": body["model"], "data": [{"index": index, "object": "score", "score": 0.5}
                                                              for index in range(len(seconds))],
                             "usage": {"prompt_tokens": 4 * len(seconds), "total_tokens": 4 * len(seconds),
                                       "completion_tokens": 0}})
