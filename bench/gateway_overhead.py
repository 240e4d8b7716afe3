"""What the gateway costs: a fast fake OpenAI upstream measured directly, through a bare FastAPI + httpx
pass-through (the floor, `bench/bare_passthrough.py`), and through `llmws serve` with auth, routing and usage
logging on, in one run, alternating, at each concurrency, streaming and not.

Each of the three servers is its own process (the fake upstream, the bare pass-through, the gateway on a fresh
SQLite database); the load comes from this process with one shared httpx client. Prints requests/s and p50/p99
latency (streams: time to the first content chunk) per target, then the ratios the goals are stated in.
Run: `.venv/bin/python bench/gateway_overhead.py [--concurrency 1 8 32] [--seconds 4] [--rounds 2]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.fake_openai import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LLMWS = str(Path(sys.executable).with_name("llmws"))
PASSWORD = "bench-admin-password-1"
BODY = {"model": "fake-fast", "messages": [{"role": "user", "content": "Say hello."}]}


@dataclass
class Sample:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def add(self, other: Sample) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.seconds += other.seconds
        self.latencies += other.latencies

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000 if ordered else float("nan")


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=log.parent)


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url} exited:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up:\n{log.read_text()}")


def set_up_gateway(base: str, upstream: str) -> str:
    """A provider for the fake upstream, an alias on it, and a user's API key; returns the key."""
    admin = {"Authorization": "Bearer " + httpx.post(f"{base}/auth/login", json={
        "username": "admin", "password": PASSWORD}).json()["access_token"]}
    provider = httpx.post(f"{base}/admin/providers", headers=admin, json={"name": "fake", "base_url": upstream})
    httpx.post(f"{base}/admin/models", headers=admin, json={
        "name": "fake-fast", "deployments": [{"provider_id": provider.json()["id"], "upstream_model": "fake-fast"}]})
    httpx.post(f"{base}/admin/users", headers=admin, json={"username": "bench", "password": PASSWORD})
    user = {"Authorization": "Bearer " + httpx.post(f"{base}/auth/login", json={
        "username": "bench", "password": PASSWORD}).json()["access_token"]}
    return httpx.post(f"{base}/v1/keys", headers=user, json={"name": "bench"}).json()["key"]


async def load(client: httpx.AsyncClient, url: str, headers: dict[str, str], concurrency: int, seconds: float,
               stream: bool) -> Sample:
    sample = Sample()
    stop_at = time.perf_counter() + seconds
    body = {**BODY, "stream": stream}

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                if stream:
                    async with client.stream("POST", url, json=body, headers=headers) as response:
                        first = None
                        async for line in response.aiter_lines():
                            if first is None and '"content":"' in line.replace(" ", "") and \
                                    '"content":""' not in line.replace(" ", ""):
                                first = time.perf_counter() - started
                        ok = response.status_code == 200 and first is not None
                        latency = first
                else:
                    response = await client.post(url, json=body, headers=headers)
                    ok = response.status_code == 200
                    latency = time.perf_counter() - started
            except httpx.HTTPError:
                ok, latency = False, None
            if ok and latency is not None:
                sample.requests += 1
                sample.latencies.append(latency)
            else:
                sample.errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    sample.seconds = time.perf_counter() - began
    return sample


async def measure(targets: dict[str, tuple[str, dict[str, str]]], concurrencies: list[int], seconds: float,
                  rounds: int) -> dict[tuple[str, bool, int], Sample]:
    results: dict[tuple[str, bool, int], Sample] = {}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    # A client (connection pool) per target: one shared pool scans every target's idle connections per request.
    clients = {name: httpx.AsyncClient(timeout=30, limits=limits) for name in targets}
    try:
        for name, (url, headers) in targets.items():  # warm-up: connections, caches, the first usage rows
            await load(clients[name], url, headers, 4, 0.5, False)
            await load(clients[name], url, headers, 4, 0.5, True)
        for stream in (False, True):
            for concurrency in concurrencies:
                for _ in range(rounds):  # alternate, so drift on this noisy machine hits every target alike
                    for name, (url, headers) in targets.items():
                        sample = await load(clients[name], url, headers, concurrency, seconds, stream)
                        results.setdefault((name, stream, concurrency), Sample()).add(sample)
    finally:
        for client in clients.values():
            await client.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=4.0, help="per target, round, mode and concurrency")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="llmws-gateway-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMWS_")}
    ports = {"upstream": free_port(), "bare": free_port(), "gateway": free_port()}
    upstream = f"http://127.0.0.1:{ports['upstream']}/v1"
    (work / "models").mkdir()
    gateway_env = {**env, "LLMWS_DATA_DIR": str(work / "var"), "LLMWS_MODEL_DIRS": str(work / "models"),
                   "LLMWS_ADMIN_PASSWORD": PASSWORD, "LLMWS_PORT": str(ports["gateway"]), "LLMWS_LOG_LEVEL": "WARNING",
                   "LLMWS_MAX_CONCURRENT_PER_USER": "100000"}  # one key drives all the load
    subprocess.run([LLMWS, "db", "upgrade"], env=gateway_env, check=True, capture_output=True, cwd=work)
    processes = [
        (spawn([sys.executable, str(REPO / "bench" / "fake_openai.py"), "--port", str(ports["upstream"])], env,
               work / "upstream.log"), f"{upstream}/models", work / "upstream.log"),
        (spawn([sys.executable, str(REPO / "bench" / "bare_passthrough.py"), "--port", str(ports["bare"]),
                "--upstream", upstream], env, work / "bare.log"),
         f"http://127.0.0.1:{ports['bare']}/docs", work / "bare.log"),
        (spawn([LLMWS, "serve"], gateway_env, work / "gateway.log"),
         f"http://127.0.0.1:{ports['gateway']}/healthz", work / "gateway.log"),
    ]
    try:
        for process, url, log in processes:
            wait_for(url, process, log)
        gateway = f"http://127.0.0.1:{ports['gateway']}"
        key = set_up_gateway(gateway, upstream)
        targets = {
            "direct": (f"{upstream}/chat/completions", {}),
            "bare pass-through": (f"http://127.0.0.1:{ports['bare']}/v1/chat/completions", {}),
            "LLMWS gateway": (f"{gateway}/v1/chat/completions", {"Authorization": f"Bearer {key}"}),
        }
        results = asyncio.run(measure(targets, args.concurrency, args.seconds, args.rounds))
    finally:
        for process, _, _ in processes:
            process.terminate()
        for process, _, _ in processes:
            process.wait(timeout=10)

    print(f"fake upstream, bare FastAPI+httpx pass-through, LLMWS gateway (auth, routing, usage logging on); "
          f"{args.rounds} alternating rounds of {args.seconds:.0f} s each")
    print(f"\n{'mode':<7} {'conc':>4} {'target':<18} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for stream in (False, True):
        for concurrency in args.concurrency:
            for name in targets:
                sample = results[(name, stream, concurrency)]
                print(f"{'stream' if stream else 'json':<7} {concurrency:>4} {name:<18} {sample.per_s:>8.0f} "
                      f"{sample.percentile(.5):>8.2f} {sample.percentile(.99):>8.2f} {sample.errors:>7}")
    print(f"\n{'mode':<7} {'conc':>4} {'gateway/bare req/s':>19} {'gateway/direct req/s':>21} "
          f"{'p50 added over direct':>22}")
    for stream in (False, True):
        for concurrency in args.concurrency:
            mine, bare = results[("LLMWS gateway", stream, concurrency)], results[("bare pass-through", stream,
                                                                                   concurrency)]
            direct = results[("direct", stream, concurrency)]
            print(f"{'stream' if stream else 'json':<7} {concurrency:>4} {mine.per_s / bare.per_s:>18.2f}x "
                  f"{mine.per_s / direct.per_s:>20.2f}x "
                  f"{statistics.median(mine.latencies) * 1000 - statistics.median(direct.latencies) * 1000:>19.2f} ms")


if __name__ == "__main__":
    main()
