"""The UI under test: a real `llmws serve` and a real `llmws ui` (panel serve) as processes on free ports, and the
headless Debian Chromium that Playwright drives (never a browser of Playwright's own download)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from playwright.sync_api import Page

from tests.support.access import bearer
from tests.support.live import LLMWS, Server, launch
from tests.support.net import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts" / "ui"
PASSWORD = "ui-test-password-1"
UI_START_TIMEOUT_S = 90


def start_ui(folder: Path, env: dict[str, str], api_url: str) -> Server:
    port = free_port()
    return launch([LLMWS, "ui", "--port", str(port)], {**env, "LLMWS_API_URL": api_url}, folder, "ui", port,
                  probe="/login", timeout_s=UI_START_TIMEOUT_S, what="the UI", poll_s=0.3, probe_timeout_s=2)


@dataclass
class UiStack:
    api: Server
    ui: Server
    admin_token: str
    folder: Path

    @property
    def admin_headers(self) -> dict[str, str]:
        return bearer(self.admin_token)

    def new_user(self, prefix: str = "user", role: str = "user") -> str:
        """A fresh account (password ``PASSWORD``), so each test's data is its own."""
        username = f"{prefix}-{uuid.uuid4().hex[:6]}"
        created = httpx.post(f"{self.api.base_url}/admin/users", headers=self.admin_headers,
                             json={"username": username, "password": PASSWORD, "role": role})
        assert created.status_code == 201, created.text
        return username

    def token_for(self, username: str) -> str:
        answer = httpx.post(f"{self.api.base_url}/auth/login", json={"username": username, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        return answer.json()["access_token"]

    def api_get(self, path: str, token: str, **params: object) -> dict:
        answer = httpx.get(f"{self.api.base_url}{path}", params=params,
                           headers=bearer(token), timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def login(self, page: Page, username: str, password: str = PASSWORD, then: str = "/chat") -> None:
        page.goto(f"{self.ui.base_url}/login?next={then}")
        page.fill("#username", username)
        page.fill("#password", password)
        page.click("#submit")
        page.wait_for_url(f"**{then}*")
        page.locator("#current-user").wait_for(timeout=30_000)


def screenshot(page: Page, name: str) -> Path:
    """Saved under var/test-artifacts/ui/ (what CI keeps to look at), one per page the tests visit."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def server_env(folder: Path, database_url: str, model_dirs: str, admin_password: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("LLMWS_")}
    return env | {"LLMWS_DATA_DIR": str(folder / "var"), "LLMWS_DATABASE_URL": database_url,
                  "PYTHONUNBUFFERED": "1", "LLMWS_MODEL_DIRS": model_dirs, "LLMWS_ADMIN_PASSWORD": admin_password,
                  "LLMWS_USAGE_FLUSH_INTERVAL": "1", "LLMWS_SECRET_KEY": "ui-tests-secret-key-0123456789abcdefgh"}
