"""Settings as `llmws` reads them from a test's own environment (and nothing from the repository's .env)."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.settings import Settings, load_settings


def settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> Settings:
    monkeypatch.chdir(tmp_path)  # no stray .env from the repository
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()
