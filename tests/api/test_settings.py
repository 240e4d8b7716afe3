"""Settings: the fixed LLMWS_* names, validation that names the bad variable, and the secret key file."""

from __future__ import annotations

import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from api.settings import Settings, SettingsError, resolve_secret_key
from tests.support.settings import settings_from_env


def test_defaults_run_on_one_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = settings_from_env(monkeypatch, tmp_path)
    assert settings.port == 8000 and settings.host == "127.0.0.1"
    assert settings.resolved_database_url == "sqlite+aiosqlite:///var/llmws.db"
    assert settings.model_dirs == [Path("models"), Path("var/models")]
    assert settings.open_registration is False


def test_fixed_names_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = settings_from_env(
        monkeypatch, tmp_path, LLMWS_HOST="0.0.0.0", LLMWS_PORT="9000",
        LLMWS_DATABASE_URL="postgresql://u@db:5432/llmws", LLMWS_DATA_DIR="/srv/llmws",
        LLMWS_MODEL_DIRS="/a/models,/b/models", LLMWS_DEFAULT_MODEL="SmolLM2", LLMWS_SECRET_KEY="k" * 40,
        LLMWS_ADMIN_USERNAME="root", LLMWS_ADMIN_PASSWORD="pw-from-env", LLMWS_API_URL="http://api:8000",
        LLMWS_TOKEN_LIFETIME="3600", LLMWS_OPEN_REGISTRATION="true",
    )
    assert (settings.host, settings.port) == ("0.0.0.0", 9000)
    assert settings.resolved_database_url == "postgresql+asyncpg://u@db:5432/llmws"
    assert settings.data_dir == Path("/srv/llmws")
    assert settings.model_dirs == [Path("/a/models"), Path("/b/models")]
    assert settings.default_model == "SmolLM2" and settings.admin_username == "root"
    assert settings.admin_password is not None and settings.admin_password.get_secret_value() == "pw-from-env"
    assert settings.api_url == "http://api:8000"
    assert settings.token_lifetime == timedelta(hours=1) and settings.open_registration is True


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LLMWS_PORT=8123\n")
    assert settings_from_env(monkeypatch, tmp_path).port == 8123


@pytest.mark.parametrize(("name", "value"), [
    ("LLMWS_PORT", "eighty"),
    ("LLMWS_PORT", "70000"),
    ("LLMWS_DATABASE_URL", "mysql://x/y"),
    ("LLMWS_TOKEN_LIFETIME", "-5"),
    ("LLMWS_OPEN_REGISTRATION", "perhaps"),
    ("LLMWS_MAX_REQUEST_BYTES", "10"),
    ("LLMWS_ADMIN_PASSWORD", "short"),
    ("LLMWS_ADMIN_USERNAME", "bad name!"),
])
def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str,
                                      value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        settings_from_env(monkeypatch, tmp_path, **{name: value})
    assert name in str(raised.value)


@pytest.mark.parametrize("secret", [None, "changeme", "short-key", "a" * 40])
def test_production_refuses_a_missing_or_weak_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, secret: str | None
) -> None:
    env = {"LLMWS_ENVIRONMENT": "production"} | ({"LLMWS_SECRET_KEY": secret} if secret else {})
    with pytest.raises(SettingsError) as raised:
        settings_from_env(monkeypatch, tmp_path, **env)
    assert "LLMWS_SECRET_KEY" in str(raised.value)


def test_production_accepts_a_strong_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = settings_from_env(monkeypatch, tmp_path, LLMWS_ENVIRONMENT="production",
                                 LLMWS_SECRET_KEY="Zq8v-3mL9xT2pW7rK4nB6cY1hJ5dF0sG")
    assert settings.environment == "production"


def test_secret_key_is_generated_once_with_owner_only_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = settings_from_env(monkeypatch, tmp_path, LLMWS_DATA_DIR=str(tmp_path / "var"))
    first = resolve_secret_key(settings)
    path = tmp_path / "var" / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 48 and resolve_secret_key(settings) == first


def test_replicas_starting_together_all_get_the_same_complete_key(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    settings = settings_from_env(monkeypatch, tmp_path, LLMWS_DATA_DIR=str(tmp_path / "var"))
    for attempt in range(5):  # a fresh data folder each time: five first starts of sixteen replicas
        fresh = settings.model_copy(update={"data_dir": tmp_path / f"var-{attempt}"})
        start_together = threading.Barrier(16)

        def first_start(_: int, fresh: Settings = fresh, barrier: threading.Barrier = start_together) -> str:
            barrier.wait()
            return resolve_secret_key(fresh)

        with ThreadPoolExecutor(16) as pool:
            keys = set(pool.map(first_start, range(16)))
        assert len(keys) == 1 and len(keys.pop()) >= 48
        assert [path.name for path in fresh.data_dir.iterdir()] == ["secret.key"]  # no temporary file left


def test_a_key_file_another_replica_has_created_but_not_written_yet_is_waited_for(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = settings_from_env(monkeypatch, tmp_path, LLMWS_DATA_DIR=str(tmp_path / "var"))
    path = tmp_path / "var" / "secret.key"
    path.parent.mkdir()
    path.touch(mode=0o600)  # what an older replica's O_EXCL create leaves until it writes
    other_replica = threading.Timer(0.3, path.write_text, ["written-by-the-other-replica-0123456789abcdef\n"])
    other_replica.start()
    try:
        assert resolve_secret_key(settings) == "written-by-the-other-replica-0123456789abcdef"
    finally:
        other_replica.join()
