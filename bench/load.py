"""A mixed load from many concurrent clients, against a real `llmws serve` on a tiny local model and against the
gateway in front of a fast fake upstream (`bench/fake_openai.py`), with the server's memory watched throughout.

The mix, cycled request by request: OpenAI chat completions, JSON and streamed (the official `openai`
AsyncOpenAI client), the native SSE stream (`POST /v1/chat/stream`), WebSocket sessions (`/v1/ws`: hello,
one inference, close), admin reads (`/admin/resources`, `/admin/usage`, `/admin/users`), and chat on a key limited
to a few requests per minute, whose 429s are deliberate (and must come: the limit has to work under load).

Each target is its own `llmws serve` process on a fresh SQLite database (or `--database-url`). A warm-up at the
same concurrency comes first; then the measured requests. RSS (psutil, on the server's pid) is read before the
warm-up, after it, and after the run once the server is idle. Prints, per target and kind: requests/s, latency
p50/p95/p99 (the whole request), TTFT p50/p95/p99 (streams: the first token), errors; then the RSS line.
Exits non-zero if any error other than a deliberate 429 happened, or RSS after is over 20% above RSS after
warm-up. Run: `.venv/bin/python bench/load.py [--requests 2000] [--concurrency 64] [--targets local gateway]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import psutil
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.fake_openai import free_port  # noqa: E402
from bench.gateway_overhead import spawn, wait_for  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LLMWS = str(Path(sys.executable).with_name("llmws"))
PASSWORD = "bench-admin-password-1"
ACCOUNTS = 8  # users (one API key each) the clients share out
LIMITED_PER_MINUTE = 5
# One cycle of the mix; request i is MIX[i % len(MIX)].
MIX = ("openai_json", "openai_stream", "native_sse", "websocket", "openai_json", "openai_stream", "native_sse",
       "websocket", "admin_resources", "admin_usage", "admin_users", "limited")
KINDS = tuple(dict.fromkeys(MIX))
RSS_GROWTH_ALLOWED = 0.20


@dataclass
class Outcome:
    latency_s: float | None = None
    ttft_s: float | None = None
    error: str | None = None
    deliberate_429: bool = False


@dataclass
class KindStats:
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    deliberate_429: int = 0

    @property
    def done(self) -> int:
        return len(self.latencies) + self.deliberate_429 + sum(self.errors.values())


def percentile_ms(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000 if ordered else float("nan")


@dataclass
class Target:
    name: str
    base_url: str
    model: str
    admin_token: str
    keys: list[str]
    limited_key: str
    pid: int


class Load:
    """The clients of one target: an AsyncOpenAI client and an httpx client per account, shared by the workers."""

    def __init__(self, target: Target, max_tokens: int) -> None:
        self.target = target
        self.max_tokens = max_tokens
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        self.http = httpx.AsyncClient(base_url=target.base_url, timeout=120, limits=limits)
        self.openai = [openai.AsyncOpenAI(base_url=f"{target.base_url}/v1", api_key=key, max_retries=0, timeout=120,
                                          http_client=httpx.AsyncClient(timeout=120, limits=limits))
                       for key in target.keys]
        self.ws_url = target.base_url.replace("http://", "ws://") + "/v1/ws"
        self.runs: dict[str, Callable[[int], Awaitable[Outcome]]] = {
            "openai_json": self.openai_json, "openai_stream": self.openai_stream, "native_sse": self.native_sse,
            "websocket": self.websocket, "admin_resources": self.admin_read("/admin/resources"),
            "admin_usage": self.admin_read("/admin/usage"), "admin_users": self.admin_read("/admin/users"),
            "limited": self.limited}

    async def close(self) -> None:
        await self.http.aclose()
        for client in self.openai:
            await client.close()

    def messages(self, index: int) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"Say something about the number {index}."}]

    async def openai_json(self, index: int) -> Outcome:
        started = time.perf_counter()
        answer = await self.openai[index % ACCOUNTS].chat.completions.create(
            model=self.target.model, messages=self.messages(index), max_tokens=self.max_tokens)  # type: ignore[arg-type]
        if not answer.choices or answer.usage is None:
            return Outcome(error="incomplete answer")
        return Outcome(time.perf_counter() - started)

    async def openai_stream(self, index: int) -> Outcome:
        started = time.perf_counter()
        ttft, finished = None, False
        stream = await self.openai[index % ACCOUNTS].chat.completions.create(
            model=self.target.model, messages=self.messages(index), max_tokens=self.max_tokens,  # type: ignore[arg-type]
            stream=True, stream_options={"include_usage": True})
        async for chunk in stream:
            for choice in chunk.choices:
                if ttft is None and choice.delta.content:
                    ttft = time.perf_counter() - started
                finished = finished or choice.finish_reason is not None
        return Outcome(time.perf_counter() - started, ttft) if finished else Outcome(error="no finish_reason")

    async def native_sse(self, index: int) -> Outcome:
        started = time.perf_counter()
        ttft, last = None, None
        body = {"message": f"Say something about the number {index}.", "model": self.target.model,
                "max_tokens": self.max_tokens}
        headers = {"Authorization": f"Bearer {self.target.keys[index % ACCOUNTS]}"}
        async with self.http.stream("POST", "/v1/chat/stream", json=body, headers=headers) as response:
            if response.status_code != 200:
                return Outcome(error=f"HTTP {response.status_code}")
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    last = line[7:]
                    if ttft is None and last == "token":
                        ttft = time.perf_counter() - started
        return Outcome(time.perf_counter() - started, ttft) if last == "done" else Outcome(error=f"ended on {last}")

    async def websocket(self, index: int) -> Outcome:
        started = time.perf_counter()
        ttft = None
        async with websockets.connect(self.ws_url, open_timeout=60, close_timeout=10) as ws:
            await ws.send(json.dumps({"type": "hello", "token": self.target.keys[index % ACCOUNTS]}))
            welcome = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if welcome.get("type") != "welcome":
                return Outcome(error=f"hello answered {welcome.get('code') or welcome.get('type')}")
            await ws.send(json.dumps({"type": "inference", "messages": self.messages(index),
                                      "config": {"model": self.target.model, "max_tokens": self.max_tokens}}))
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 120))
                if event["type"] == "token" and ttft is None:
                    ttft = time.perf_counter() - started
                if event["type"] == "error":
                    return Outcome(error=f"ws {event.get('code')}")
                if event["type"] == "done":
                    return Outcome(time.perf_counter() - started, ttft)

    def admin_read(self, path: str) -> Callable[[int], Awaitable[Outcome]]:
        async def read(index: int) -> Outcome:
            started = time.perf_counter()
            response = await self.http.get(path, headers={"Authorization": f"Bearer {self.target.admin_token}"})
            if response.status_code != 200:
                return Outcome(error=f"HTTP {response.status_code}")
            return Outcome(time.perf_counter() - started)
        return read

    async def limited(self, index: int) -> Outcome:
        started = time.perf_counter()
        response = await self.http.post(
            "/v1/chat/completions", headers={"Authorization": f"Bearer {self.target.limited_key}"},
            json={"model": self.target.model, "messages": self.messages(index), "max_tokens": self.max_tokens})
        if response.status_code == 429 and response.json()["error"]["type"] == "rate_limit_exceeded":
            return Outcome(deliberate_429=True)
        if response.status_code != 200:
            return Outcome(error=f"HTTP {response.status_code}")
        return Outcome(time.perf_counter() - started)

    async def run(self, requests: int, concurrency: int, seconds: float) -> tuple[dict[str, KindStats], float]:
        stats = {kind: KindStats() for kind in KINDS}
        counter = iter(range(requests))
        began = time.perf_counter()
        stop_at = began + seconds

        async def worker() -> None:
            for index in counter:  # a shared iterator: each index is taken by exactly one worker
                if time.perf_counter() > stop_at:
                    return
                kind = MIX[index % len(MIX)]
                try:
                    outcome = await self.runs[kind](index)
                except openai.APIStatusError as exc:
                    outcome = Outcome(error=f"HTTP {exc.status_code}")
                except Exception as exc:  # noqa: BLE001 (every failure is counted, by its kind)
                    outcome = Outcome(error=type(exc).__name__)
                kept = stats[kind]
                if outcome.error is not None:
                    kept.errors[outcome.error] += 1
                elif outcome.deliberate_429:
                    kept.deliberate_429 += 1
                else:
                    kept.latencies.append(outcome.latency_s or 0.0)
                    if outcome.ttft_s is not None:
                        kept.ttfts.append(outcome.ttft_s)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return stats, time.perf_counter() - began


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def wait_idle(base_url: str, admin_token: str, seconds: float = 60) -> None:
    """Until the engine runs nothing and nothing is queued (the local model; the gateway has no engine work)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        engine = httpx.get(f"{base_url}/admin/resources", headers={"Authorization": f"Bearer {admin_token}"},
                           timeout=30).json().get("engine") or {}
        if not engine.get("running") and not engine.get("queue_depth"):
            return
        time.sleep(0.2)


def tiny_model(folder: Path) -> Path:
    """A tiny random Llama (the tests' `chat_model_dir`) with the demo model's tokenizer: `<folder>/tiny-chat/`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from engine.demo_model import demo_model_path
    from engine.loader import converted_folder

    tokenizer = AutoTokenizer.from_pretrained(converted_folder(demo_model_path(REPO / "models"),
                                                               REPO / "var" / "cache" / "converted"))
    torch.manual_seed(4321)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).eval().save_pretrained(folder / "tiny-chat")
    tokenizer.save_pretrained(folder / "tiny-chat")
    return folder / "tiny-chat"


def set_up(base: str, upstream: str | None) -> tuple[str, list[str], str]:
    """The fake upstream as a provider with the alias `fake-fast` (gateway only), bench users with a key each, and
    a key limited to LIMITED_PER_MINUTE requests a minute. Returns the admin token, the keys and the limited key."""
    admin_token = httpx.post(f"{base}/auth/login", json={"username": "admin", "password": PASSWORD}).json()[
        "access_token"]
    admin = {"Authorization": f"Bearer {admin_token}"}
    if upstream is not None:
        provider = httpx.post(f"{base}/admin/providers", headers=admin, json={"name": "fake", "base_url": upstream})
        httpx.post(f"{base}/admin/models", headers=admin, json={
            "name": "fake-fast", "deployments": [{"provider_id": provider.json()["id"],
                                                  "upstream_model": "fake-fast"}]}).raise_for_status()
    keys = []
    for number in range(ACCOUNTS + 1):
        username = f"bench-{number}-{uuid.uuid4().hex[:6]}"
        httpx.post(f"{base}/admin/users", headers=admin,
                   json={"username": username, "password": PASSWORD}).raise_for_status()
        token = httpx.post(f"{base}/auth/login", json={"username": username, "password": PASSWORD}).json()[
            "access_token"]
        created = httpx.post(f"{base}/v1/keys", headers={"Authorization": f"Bearer {token}"}, json={"name": "bench"})
        keys.append(created.json())
    httpx.put(f"{base}/admin/keys/{keys[-1]['id']}/limits", headers=admin,
              json={"requests_per_minute": LIMITED_PER_MINUTE}).raise_for_status()
    return admin_token, [key["key"] for key in keys[:-1]], keys[-1]["key"]


@dataclass
class Result:
    stats: dict[str, KindStats]
    seconds: float
    rss_before: float
    rss_warm: float
    rss_after: float


async def drive(target: Target, args: argparse.Namespace) -> Result:
    load = Load(target, args.max_tokens)
    try:
        rss_before = rss_mb(target.pid)
        warm_stats, _ = await load.run(args.warmup, args.concurrency, args.seconds)
        warm_errors = {kind: dict(kept.errors) for kind, kept in warm_stats.items() if kept.errors}
        if warm_errors:
            print(f"{target.name}: errors during warm-up: {warm_errors}", file=sys.stderr)
        await asyncio.to_thread(wait_idle, target.base_url, target.admin_token)
        rss_warm = rss_mb(target.pid)
        stats, seconds = await load.run(args.requests, args.concurrency, args.seconds)
        await asyncio.to_thread(wait_idle, target.base_url, target.admin_token)
        await asyncio.sleep(2)  # the usage writer's last batch, the streams' retention sweeps
        return Result(stats, seconds, rss_before, rss_warm, rss_mb(target.pid))
    finally:
        await load.close()


def run_target(name: str, args: argparse.Namespace, work: Path) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMWS_")}
    folder = work / name
    (folder / "models").mkdir(parents=True)
    processes: list[subprocess.Popen[bytes]] = []
    upstream = None
    if name == "local":
        tiny_model(folder / "models")
    else:
        port = free_port()
        upstream = f"http://127.0.0.1:{port}/v1"
        processes.append(spawn([sys.executable, str(REPO / "bench" / "fake_openai.py"), "--port", str(port)], env,
                               folder / "upstream.log"))
        wait_for(f"{upstream}/models", processes[-1], folder / "upstream.log")
    port = free_port()
    server_env = {**env, "LLMWS_DATA_DIR": str(folder / "var"), "LLMWS_MODEL_DIRS": str(folder / "models"),
                  "LLMWS_ADMIN_PASSWORD": PASSWORD, "LLMWS_PORT": str(port), "LLMWS_LOG_LEVEL": "WARNING",
                  "LLMWS_TORCH_THREADS": "1",
                  "LLMWS_MAX_CONCURRENT_PER_USER": "100000"}  # one account drives all the load
    if args.database_url:
        server_env["LLMWS_DATABASE_URL"] = args.database_url
    subprocess.run([LLMWS, "db", "upgrade"], env=server_env, check=True, capture_output=True, cwd=folder)
    base = f"http://127.0.0.1:{port}"
    processes.append(spawn([LLMWS, "serve"], server_env, folder / "server.log"))
    try:
        # /readyz: the local model is loaded (the gateway, with no model, is never "ready" by it).
        wait_for(f"{base}/{'readyz' if name == 'local' else 'healthz'}", processes[-1], folder / "server.log",
                 seconds=120)
        admin_token, keys, limited_key = set_up(base, upstream)
        target = Target(name, base, "tiny-chat" if name == "local" else "fake-fast", admin_token, keys, limited_key,
                        processes[-1].pid)
        return asyncio.run(drive(target, args))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def report(results: dict[str, Result], args: argparse.Namespace) -> bool:
    """Prints the tables; True when the acceptance holds (no errors but deliberate 429s, RSS within bounds)."""
    ok = True
    print(f"{args.requests} requests per target at concurrency {args.concurrency} (after {args.warmup} warm-up "
          f"requests), max_tokens {args.max_tokens}; latency = whole request, TTFT = first token")
    print(f"\n{'target':<8} {'kind':<16} {'done':>5} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'ttft p50':>8} {'ttft p95':>8} {'ttft p99':>8} {'429s':>5} errors")
    for name, result in results.items():
        total = sum(kept.done for kept in result.stats.values())
        for kind, kept in result.stats.items():
            errors = ", ".join(f"{what}: {count}" for what, count in kept.errors.items()) or "0"
            ok = ok and not kept.errors
            print(f"{name:<8} {kind:<16} {kept.done:>5} {kept.done / result.seconds:>7.1f} "
                  f"{percentile_ms(kept.latencies, .5):>8.1f} {percentile_ms(kept.latencies, .95):>8.1f} "
                  f"{percentile_ms(kept.latencies, .99):>8.1f} {percentile_ms(kept.ttfts, .5):>8.1f} "
                  f"{percentile_ms(kept.ttfts, .95):>8.1f} {percentile_ms(kept.ttfts, .99):>8.1f} "
                  f"{kept.deliberate_429:>5} {errors}")
        print(f"{name:<8} {'all':<16} {total:>5} {total / result.seconds:>7.1f}   ({result.seconds:.1f} s)")
        if result.stats["limited"].deliberate_429 == 0:
            ok = False
            print(f"{name}: the limited key was never refused", file=sys.stderr)
        if total < args.requests:
            ok = False
            print(f"{name}: only {total} of {args.requests} requests ran within {args.seconds:.0f} s", file=sys.stderr)
    print(f"\n{'target':<8} {'RSS before':>11} {'after warm-up':>14} {'after':>9} {'growth':>8}")
    for name, result in results.items():
        growth = result.rss_after / result.rss_warm - 1
        ok = ok and growth <= RSS_GROWTH_ALLOWED
        print(f"{name:<8} {result.rss_before:>8.0f} MB {result.rss_warm:>11.0f} MB {result.rss_after:>6.0f} MB "
              f"{growth:>+7.1%}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per target")
    parser.add_argument("--warmup", type=int, default=400, help="requests before the 'after warm-up' RSS")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=900, help="a bound on each phase's time")
    parser.add_argument("--targets", nargs="+", choices=["local", "gateway"], default=["local", "gateway"])
    parser.add_argument("--database-url", help="a migrated-or-empty database for both (default: fresh SQLite files)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmws-load-"))
    results = {name: run_target(name, args, work) for name in args.targets}
    ok = report(results, args)
    print(f"\nlogs: {work}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
