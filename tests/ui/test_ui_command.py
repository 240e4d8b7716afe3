"""`llmws ui`: what it runs, without a browser."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.cli import ui_command, ui_environment
from api.settings import load_settings


def test_every_page_is_served_behind_the_api_login_and_the_cookie_secret_stays_off_the_command_line(
        tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, secret_key="a-server-secret-key-that-is-long-enough-0123")
    command = ui_command(settings, port=5999)
    pages = {Path(arg).stem for arg in command if arg.endswith(".py")}
    assert {"chat", "history", "projects", "settings", "admin_overview", "admin_users"} <= pages
    assert command[command.index("--auth-module") + 1].endswith("ui/auth.py")
    assert command[command.index("--port") + 1] == "5999"
    secret = ui_environment(settings)["PANEL_COOKIE_SECRET"]
    assert len(secret) == 64 and secret not in " ".join(command)
    # The same key gives the same cookie secret, so a restart keeps everyone logged in.
    assert ui_environment(load_settings(data_dir=tmp_path, secret_key="a-server-secret-key-that-is-long-enough-0123")
                          )["PANEL_COOKIE_SECRET"] == secret


def test_the_ui_looks_for_the_api_where_the_api_listens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `LLMWS_PORT=18000 make run`: both processes read the same environment.
    monkeypatch.setenv("LLMWS_PORT", "18000")
    settings = load_settings(data_dir=tmp_path)
    assert settings.api_url == "http://127.0.0.1:18000"
    assert ui_environment(settings)["LLMWS_API_URL"] == "http://127.0.0.1:18000"
    # An API bound to every address is reached on loopback.
    assert load_settings(data_dir=tmp_path, host="0.0.0.0").api_url == "http://127.0.0.1:18000"  # noqa: S104
    assert load_settings(data_dir=tmp_path, host="::").api_url == "http://[::1]:18000"


def test_an_explicit_api_url_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMWS_PORT", "18000")
    monkeypatch.setenv("LLMWS_API_URL", "https://api.example.com")
    settings = load_settings(data_dir=tmp_path)
    assert settings.api_url == "https://api.example.com"
    assert ui_environment(settings)["LLMWS_API_URL"] == "https://api.example.com"
