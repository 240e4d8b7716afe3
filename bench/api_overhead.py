"""What the API layer costs per token: SSE token events per second through a real uvicorn, against the raw rate of
the engine backend behind it, in one run.

The backend is a deterministic zero-cost engine (every token is ready at once), registered beside the local model
as ``zero-cost``, so the figures are the API's alone: auth, limits, metering, JSON, SSE framing, uvicorn, the
loopback socket. The server runs in its own process (uvicorn, one worker); the clients are httpx in this one.
Run: `.venv/bin/python bench/api_overhead.py [--tokens 2000] [--concurrency 1 32]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from api.services.gateway.backends import Backend
from engine.interface import EngineStats, Health
from engine.requests import EngineEvent, FinishEvent, GenerationRequest, StartEvent, TokenEvent, Usage

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "bench-password-123"


class ZeroCostEngine:
    """Answers every request with ``max_tokens`` one-word tokens, all ready at once."""

    async def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        tokens = request.sampling.max_tokens
        yield StartEvent(request.request_id, 8, tokens)
        for index in range(tokens):
            yield TokenEvent(request.request_id, 0, "word ", (index,))
        yield FinishEvent(request.request_id, 0, "length", Usage(8, tokens))

    def abort(self, request_id: str) -> None:
        pass

    async def check_health(self) -> Health:
        return Health(True, "zero cost")

    def stats(self) -> EngineStats:
        return EngineStats(0, 0, 0, 0.0, 0)


def serve(port: int, data_dir: Path) -> None:
    import uvicorn

    from api.app import create_app
    from api.settings import Settings
    from db import migrate

    settings = Settings(_env_file=None, data_dir=data_dir, model_dirs=[], admin_password=PASSWORD,  # type: ignore[call-arg]
                        log_level="WARNING", max_concurrent_per_user=100_000)  # one key, many streams
    migrate.upgrade(settings.resolved_database_url)
    app = create_app(settings, extra_backends=[Backend(model="zero-cost", kind="bench", client=ZeroCostEngine())])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def raw_rate(tokens: int, concurrency: int) -> float:
    engine = ZeroCostEngine()

    async def one() -> int:
        request = GenerationRequest(prompt="x", sampling=_params(tokens))
        return len([event async for event in engine.generate(request) if isinstance(event, TokenEvent)])

    started = time.perf_counter()
    counts = await asyncio.gather(*(one() for _ in range(concurrency)))
    return sum(counts) / (time.perf_counter() - started)


def _params(tokens: int):  # noqa: ANN202
    from engine.requests import SamplingParams
    return SamplingParams(max_tokens=tokens)


async def sse_rate(base: str, key: str, path: str, body: dict, concurrency: int) -> tuple[float, int]:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency + 4)

    async def one(http: httpx.AsyncClient) -> int:
        events = 0
        async with http.stream("POST", f"{base}{path}", json=body, headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            async for line in response.aiter_lines():
                if line.startswith("data: ") and ("word" in line):
                    events += 1
        return events

    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await one(http)  # warm-up
        started = time.perf_counter()
        counts = await asyncio.gather(*(one(http) for _ in range(concurrency)))
        return sum(counts) / (time.perf_counter() - started), sum(counts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.data_dir)
        return

    from bench.fake_openai import free_port

    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--data-dir", folder], env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait(base)
            token = httpx.post(f"{base}/auth/login", json={"username": "admin", "password": PASSWORD}).json()
            key = httpx.post(f"{base}/v1/keys", json={"name": "bench"},
                             headers={"Authorization": f"Bearer {token['access_token']}"}).json()["key"]
            openai_body = {"model": "zero-cost", "messages": [{"role": "user", "content": "x"}],
                           "max_tokens": args.tokens, "stream": True}
            native_body = {"model": "zero-cost", "message": "x", "max_tokens": args.tokens}
            print(f"API overhead: zero-cost engine, {args.tokens} tokens per request, uvicorn in its own process\n")
            print(f"{'path':<26} {'conc':>4} {'events/s':>10} {'API / raw':>10}")
            for concurrency in args.concurrency:
                raw = asyncio.run(raw_rate(args.tokens, concurrency))
                print(f"{'raw engine (in process)':<26} {concurrency:>4} {raw:>10,.0f} {'':>10}")
                for label, path, body in (("/v1/chat/completions SSE", "/v1/chat/completions", openai_body),
                                          ("/v1/chat/stream SSE", "/v1/chat/stream", native_body)):
                    rate, _ = asyncio.run(sse_rate(base, key, path, body, concurrency))
                    print(f"{label:<26} {concurrency:>4} {rate:>10,.0f} {rate / raw:>9.3f}x")
        finally:
            server.terminate()
            server.wait(timeout=30)


def _wait(base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("the benchmark server did not start")


if __name__ == "__main__":
    main()
