"""What authentication costs per request: a real `llmws serve` on loopback, SQLite, sequential keep-alive requests.

Prints one table: the open /healthz as the baseline, then /auth/me with a login token and with an API key, and
the login itself (one Argon2id verification). Run: `.venv/bin/python bench/auth_overhead.py [--requests N]`.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PASSWORD = "bench-password-123"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    llmws = str(Path(sys.executable).with_name("llmws"))
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("LLMWS_")}
    env |= {"LLMWS_DATA_DIR": str(data_dir), "LLMWS_PORT": str(port), "LLMWS_ADMIN_PASSWORD": PASSWORD,
            "LLMWS_LOG_LEVEL": "WARNING"}
    subprocess.run([llmws, "db", "upgrade"], env=env, check=True, capture_output=True)
    server = subprocess.Popen([llmws, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return server, base
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("server did not start")


def measure(client: httpx.Client, method: str, path: str, count: int, **kwargs: object) -> list[float]:
    client.request(method, path, **kwargs)  # warm-up
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.request(method, path, **kwargs)
        timings.append(time.perf_counter() - started)
        response.raise_for_status()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server, base = start(Path(tmp))
        try:
            with httpx.Client(base_url=base) as client:
                token = client.post("/auth/login", json={"username": "admin", "password": PASSWORD}).json()
                session = {"Authorization": f"Bearer {token['access_token']}"}
                key = client.post("/v1/keys", json={"name": "bench"}, headers=session).json()["key"]
                rows = [
                    ("GET /healthz", "none", measure(client, "GET", "/healthz", args.requests)),
                    ("GET /auth/me", "login token", measure(client, "GET", "/auth/me", args.requests, headers=session)),
                    ("GET /auth/me", "API key", measure(client, "GET", "/auth/me", args.requests,
                                                        headers={"Authorization": f"Bearer {key}"})),
                    ("POST /auth/login", "password", measure(client, "POST", "/auth/login", 20,
                                                             json={"username": "admin", "password": PASSWORD})),
                ]
        finally:
            server.terminate()
            server.wait(timeout=30)
    baseline = statistics.median(rows[0][2])
    print(f"{'route':<18} {'credential':<12} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>7} {'x healthz':>9}")
    for route, credential, timings in rows:
        p50 = statistics.median(timings)
        p95 = statistics.quantiles(timings, n=20)[18]
        print(f"{route:<18} {credential:<12} {len(timings):>5} {p50 * 1e3:>8.2f} {p95 * 1e3:>8.2f} "
              f"{len(timings) / sum(timings):>7.0f} {p50 / baseline:>9.1f}")


if __name__ == "__main__":
    main()
