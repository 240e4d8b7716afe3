"""`llmws ui`: what it runs, without a browser."""

from __future__ import annotations

from pathlib import Path

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
