"""A real `llmws serve` process on a free port, and what the end-to-end tests do with it over HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

LLMWS = str(Path(sys.executable).with_name("llmws"))
# A deadline, not a wait: at a load average of 12 on 2 cores `llmws serve` printed nothing for 60 s (importing
# torch), and the start was reported as a failure.
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    console: Path

    def stop(self) -> str:
        self.process.terminate()
        self.process.wait(timeout=30)
        return self.console.read_text()


def start_server(tmp_path: Path, env: dict[str, str], name: str, port: int | None = None) -> Server:
    port = port or free_port()
    console = tmp_path / f"{name}.console"
    with console.open("wb") as sink:
        process = subprocess.Popen([LLMWS, "serve"], env={**env, "LLMWS_PORT": str(port)}, cwd=tmp_path,
                                   stdout=sink, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, console)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"server did not start:\n{console.read_text()}")
        time.sleep(0.2)


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while httpx.get(f"{server.base_url}/readyz", timeout=10).status_code != 200:
        if time.monotonic() > deadline:
            pytest.fail(f"server never became ready:\n{server.console.read_text()}")
        time.sleep(0.2)


@dataclass
class Account:
    user_id: int
    username: str
    key: str
    key_id: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class LiveApi:
    """The served API, with an admin login for set-up and inspection."""

    server: Server
    admin_token: str
    env: dict[str, str]  # what the server was started with, for a second replica on the same database

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def new_account(self, prefix: str = "user") -> Account:
        """A fresh user with one API key, so each test's usage and limits are its own."""
        username = f"{prefix}-{uuid.uuid4().hex[:8]}"
        password = "live-test-password-1"
        created = httpx.post(f"{self.base_url}/admin/users", headers=self.admin,
                             json={"username": username, "password": password})
        assert created.status_code == 201, created.text
        token = httpx.post(f"{self.base_url}/auth/login",
                           json={"username": username, "password": password}).json()["access_token"]
        key = httpx.post(f"{self.base_url}/v1/keys", json={"name": "tests"},
                         headers={"Authorization": f"Bearer {token}"})
        assert key.status_code == 201, key.text
        return Account(created.json()["id"], username, key.json()["key"], key.json()["id"])

    def engine_stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.base_url}/admin/resources", headers=self.admin).json()["engine"]

    def wait_engine_idle(self, within_s: float) -> float:
        """Seconds until the engine runs nothing; fails past ``within_s``."""
        started = time.monotonic()
        while (stats := self.engine_stats())["running"] or stats["queue_depth"]:
            if time.monotonic() - started > within_s:
                pytest.fail(f"the engine still runs {stats} after {within_s} s")
            time.sleep(0.05)
        return time.monotonic() - started

    def usage_by_status(self, account: Account, *, expect_requests: int, within_s: float = 10) -> dict[str, dict]:
        """The account's usage grouped by status, once ``expect_requests`` rows are written (off the hot path)."""
        deadline = time.monotonic() + within_s
        while True:
            answer = httpx.get(f"{self.base_url}/v1/usage", params={"group_by": "status"}, headers=account.headers)
            assert answer.status_code == 200, answer.text
            groups = {row["group"]: row for row in answer.json()["data"]}
            if sum(row["requests"] for row in groups.values()) >= expect_requests or time.monotonic() > deadline:
                return groups
            time.sleep(0.1)
