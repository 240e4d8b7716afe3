"""A fake OpenAI-compatible upstream, for the gateway's tests and benchmarks: it answers at once, and misbehaves
on request, chosen by the model name asked for, while recording what it saw.

Models: `fake-fast` (a short streamed answer, usage when asked), `fake-quiet` (never reports usage),
`fake-fail` (500), `fake-die` (three chunks, then the connection drops), `fake-slow` (a chunk every 50 ms for a
minute; a client going away is recorded in `disconnects`), `fake-garbage` (an event that is not JSON),
`fake-stall` (no answer at all for a minute: not even headers), `fake-hang` (headers and a first chunk, then
silence for a minute).
Run it alone with `python bench/fake_openai.py --port 9100`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODELS = ("fake-fast", "fake-quiet", "fake-fail", "fake-die", "fake-slow", "fake-garbage", "fake-stall",
          "fake-hang")
SILENCE_S = 60.0
WORDS = ["Hello", " from", " the", " fake", " upstream", ",", " fast", " and", " honest", "."]


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.authorization: list[str | None] = []
        self.disconnects: list[float] = []
        self.app = Starlette(routes=[
            Route("/v1/models", self.models),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
        ])
        self._server: uvicorn.Server | None = None
        self.base_url = ""

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                                         "owned_by": "fake"} for name in MODELS]})

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.authorization.append(request.headers.get("authorization"))
        model = body.get("model")
        if model == "fake-fail":
            return JSONResponse({"error": {"message": "the fake upstream fails on purpose"}}, status_code=500)
        if model not in MODELS:
            return JSONResponse({"error": {"message": f"model {model!r} does not exist"}}, status_code=404)
        if model == "fake-stall":
            deadline = time.monotonic() + SILENCE_S
            while time.monotonic() < deadline and not await request.is_disconnected():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            self.disconnects.append(time.monotonic())
            return Response(status_code=504)
        words = WORDS
        usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
        if not body.get("stream"):
            answer: dict[str, Any] = {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                                      "model": model, "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                          "role": "assistant", "content": "".join(words)}}]}
            if model != "fake-quiet":
                answer["usage"] = usage
            return JSONResponse(answer)
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage")) and model != "fake-quiet"
        return StreamingResponse(self._stream(model, words, usage if wants_usage else None),
                                 media_type="text/event-stream")

    async def _stream(self, model: str, words: list[str], usage: dict[str, int] | None) -> AsyncIterator[bytes]:
        head = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

        def event(payload: dict[str, Any]) -> bytes:
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        try:
            yield event({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                              "finish_reason": None}]})
            if model == "fake-garbage":
                yield b"data: {this is not json\n\n"
                return
            if model == "fake-hang":
                await asyncio.sleep(SILENCE_S)
                return
            count = 1200 if model == "fake-slow" else len(words)
            for index in range(count):
                if model == "fake-die" and index == 3:
                    raise ConnectionAbortedError("the fake upstream dies mid-stream on purpose")
                if model == "fake-slow":
                    await asyncio.sleep(0.05)
                yield event({**head, "choices": [{"index": 0, "delta": {"content": words[index % len(words)]},
                                                  "finish_reason": None}]})
            yield event({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if usage is not None:
                yield event({**head, "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"
        except asyncio.CancelledError:
            self.disconnects.append(time.monotonic())
            raise

    def start(self, port: int | None = None) -> str:
        self._server, root = serve_in_thread(self.app, port)
        self.base_url = f"{root}/v1"
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True


def serve_in_thread(app: Any, port: int | None = None) -> tuple[uvicorn.Server, str]:
    """An ASGI app served by uvicorn in a daemon thread of this process; returns the server and its base URL."""
    # The listening socket is bound here and handed over: a port probed free and bound later could be taken by
    # another process in between (many test servers start at once).
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port or 0))
    port = int(listener.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="off"))
    threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="fake-server", daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the fake server did not start")
        time.sleep(0.01)
    return server, f"http://127.0.0.1:{port}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9100)
    arguments = parser.parse_args()
    uvicorn.run(FakeUpstream().app, host="127.0.0.1", port=arguments.port, log_level="warning")
