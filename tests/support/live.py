"""A real `llmws serve` process on a free port, and what the end-to-end tests do with it over HTTP."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.access import admin_token_of, bearer
from tests.support.net import free_port, wait_until_answering

LLMWS = str(Path(sys.executable).with_name("llmws"))
# A deadline, not a wait: at a load average of 12 on 2 cores `llmws serve` printed nothing for 60 s (importing
# torch), and the start was reported as a failure.
START_TIMEOUT_S = 180


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    console: Path

    def stop(self) -> str:
        self.process.terminate()
        self.process.wait(timeout=30)
        return self.console.read_text()


def launch(argv: list[str], env: dict[str, str], folder: Path, name: str, port: int, *, probe: str,
           timeout_s: float, what: str, poll_s: float = 0.2, probe_timeout_s: float = 1) -> Server:
    """``argv`` started in ``folder`` (its output in ``<name>.console``), once ``probe`` answers 200 on ``port``."""
    console = folder / f"{name}.console"
    with console.open("wb") as sink:
        process = subprocess.Popen(argv, env=env, cwd=folder, stdout=sink, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, console)
    wait_until_answering(f"{server.base_url}{probe}", process, console, timeout_s=timeout_s, what=what,
                         poll_s=poll_s, probe_timeout_s=probe_timeout_s)
    return server


def start_server(tmp_path: Path, env: dict[str, str], name: str, port: int | None = None) -> Server:
    """`llmws serve` with ``env``, once it is live (/healthz); the model may still be loading."""
    port = port or free_port()
    return launch([LLMWS, "serve"], {**env, "LLMWS_PORT": str(port)}, tmp_path, name, port, probe="/healthz",
                  timeout_s=START_TIMEOUT_S, what="server")


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
        return bearer(self.key)


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
        return bearer(self.admin_token)

    def new_account(self, prefix: str = "user") -> Account:
        """A fresh user with one API key, so each test's usage and limits are its own."""
        username = f"{prefix}-{uuid.uuid4().hex[:8]}"
        password = "live-test-password-1"
        created = httpx.post(f"{self.base_url}/admin/users", headers=self.admin,
                             json={"username": username, "password": password})
        assert created.status_code == 201, created.text
        token = httpx.post(f"{self.base_url}/auth/login",
                           json={"username": username, "password": password}).json()["access_token"]
        key = httpx.post(f"{self.base_url}/v1/keys", json={"name": "tests"}, headers=bearer(token))
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


@contextlib.contextmanager
def serving(folder: Path, env: dict[str, str], name: str) -> Iterator[LiveApi]:
    """`llmws serve` with ``env``, ready (its model loaded) and logged in as the bootstrap admin; stopped after."""
    server = start_server(folder, env, name)
    try:
        wait_ready(server)
        yield LiveApi(server, admin_token_of(server.base_url, env["LLMWS_ADMIN_PASSWORD"]), env)
    finally:
        server.stop()
