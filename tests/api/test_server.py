"""The real thing: `llmws` processes, uvicorn on a free port, the API reached over loopback."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from db import migrate
from tests.support.live import LLMWS, START_TIMEOUT_S, Server, start_server
from tests.support.net import free_port

PASSWORD_MARKER = "with the password:"


def first_admin_password(server: Server) -> str:
    """The first admin's password, generated and printed once on the console."""
    return server.console.read_text().split(PASSWORD_MARKER)[1].split()[0]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("LLMWS_")}
    return clean | {"LLMWS_DATA_DIR": str(tmp_path / "var"), "PYTHONUNBUFFERED": "1"}


def test_serve_refuses_a_database_that_is_behind(tmp_path: Path, env: dict[str, str]) -> None:
    result = subprocess.run([LLMWS, "serve"], env=env | {"LLMWS_PORT": str(free_port())}, cwd=tmp_path,
                            capture_output=True, text=True, timeout=START_TIMEOUT_S)
    assert result.returncode == 1
    assert "run `llmws db upgrade` first" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The usual umask (group and others may read), so the modes checked are the ones LLMWS chose."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_without_a_model_the_server_starts_and_says_why_it_is_not_ready(
    tmp_path: Path, env: dict[str, str], permissive_umask: None
) -> None:
    var = tmp_path / "var"
    migrate.upgrade(f"sqlite+aiosqlite:///{var / 'llmws.db'}")  # what `llmws db upgrade` does: the default database
    env |= {"LLMWS_MODEL_DIRS": str(tmp_path / "no-models")}
    running = start_server(tmp_path, env, "no-model")
    try:
        ready = httpx.get(f"{running.base_url}/readyz")
        assert ready.status_code == 503
        # Anyone sees the verdicts; why (and where the server looked for models) is for an admin.
        assert ready.json()["checks"]["engine"] == {"ok": False} and "no-models" not in ready.text
        assert ready.json()["checks"]["database"] == {"ok": True}
        login = httpx.post(f"{running.base_url}/auth/login",
                           json={"username": "admin", "password": first_admin_password(running)})
        detailed = httpx.get(f"{running.base_url}/readyz",
                             headers={"Authorization": f"Bearer {login.json()['access_token']}"})
        assert detailed.status_code == 503
        assert "no model found" in detailed.json()["checks"]["engine"]["detail"]
    finally:
        running.stop()
    # Conversations, password hashes and the key that unseals provider keys: nobody else's to read.
    modes = {path.relative_to(var).as_posix(): stat.S_IMODE(path.stat().st_mode) for path in [var, *var.rglob("*")]}
    assert modes == {".": 0o700, "llmws.db": 0o600, "secret.key": 0o600, "logs": 0o700, "logs/llmws.log": 0o600}


@pytest.fixture
def server(tmp_path: Path, env: dict[str, str], database_url: str, tiny_model_dir: Path) -> Iterator[Server]:
    """`llmws serve` on a migrated database of each backend, serving the tiny model, with no admin password."""
    env["LLMWS_DATABASE_URL"] = database_url
    env["LLMWS_MODEL_DIRS"] = str(tiny_model_dir.parent)
    running = start_server(tmp_path, env, "first")
    yield running
    if running.process.poll() is None:
        running.stop()


def test_served_api_end_to_end(server: Server, tmp_path: Path, env: dict[str, str]) -> None:
    base = server.base_url
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{base}/readyz")
    for _ in range(100):  # the model loads after the API starts answering
        if ready.status_code == 200:
            break
        time.sleep(0.2)
        ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"database", "migrations", "engine", "providers"}

    password = first_admin_password(server)
    login = httpx.post(f"{base}/auth/login", json={"username": "admin", "password": password})
    assert login.status_code == 200
    token = login.json()["access_token"]
    detailed = httpx.get(f"{base}/readyz", headers={"Authorization": f"Bearer {token}"})
    assert detailed.json()["checks"]["engine"]["model"] == "tiny-llama"
    key = httpx.post(f"{base}/v1/keys", json={"name": "e2e"}, headers={"Authorization": f"Bearer {token}"})
    me = httpx.get(f"{base}/auth/me", headers={"Authorization": f"Bearer {key.json()['key']}"})
    assert me.json()["username"] == "admin" and me.json()["credential"] == "api_key"

    metrics = httpx.get(f"{base}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'llmws_http_requests_total{method="POST",route="/auth/login",status="200"} 1.0' in metrics.text

    console = server.stop()
    # Uvicorn re-raises SIGTERM after a clean shutdown, so -15 is the orderly exit here.
    assert server.process.returncode in (0, -15) and "Application shutdown complete" in console, console
    log_file = tmp_path / "var" / "logs" / "llmws.log"
    log_lines = log_file.read_text().splitlines()
    assert log_lines and all(json.loads(line)["message"] is not None for line in log_lines)
    assert password not in log_file.read_text()
    assert stat.S_IMODE((tmp_path / "var" / "secret.key").stat().st_mode) == 0o600

    # A restart on the same database keeps the admin and prints no new password.
    again = start_server(tmp_path, env, "second")
    try:
        relogin = httpx.post(f"{again.base_url}/auth/login", json={"username": "admin", "password": password})
        assert relogin.status_code == 200
    finally:
        assert PASSWORD_MARKER not in again.stop()
