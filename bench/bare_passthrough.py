"""The floor any Python gateway stands on: FastAPI + one shared httpx client forwarding OpenAI chat requests to one
upstream, streams chunk by chunk, with no auth, routing or accounting. `bench/gateway_overhead.py` runs it.
Run: `python bench/bare_passthrough.py --port 9200 --upstream http://127.0.0.1:9100/v1`."""

from __future__ import annotations

import argparse

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse


def build(upstream: str) -> FastAPI:
    app = FastAPI()
    client = httpx.AsyncClient(base_url=upstream, timeout=60,
                               limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200))

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.body()
        upstream_request = client.build_request("POST", "/chat/completions", content=body,
                                                headers={"content-type": "application/json"})
        response = await client.send(upstream_request, stream=True)
        if "text/event-stream" not in response.headers.get("content-type", ""):
            content = await response.aread()
            await response.aclose()
            return Response(content, status_code=response.status_code, media_type="application/json")

        async def relay():  # noqa: ANN202
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            finally:
                await response.aclose()

        return StreamingResponse(relay(), media_type="text/event-stream")

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--upstream", default="http://127.0.0.1:9100/v1")
    arguments = parser.parse_args()
    uvicorn.run(build(arguments.upstream), host="127.0.0.1", port=arguments.port, log_level="warning")
