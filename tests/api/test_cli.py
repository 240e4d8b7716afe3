"""The ``llmws`` command's database and user subcommands, run in process against a real SQLite file."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from api.cli import main


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLMWS_DATA_DIR", str(tmp_path / "var"))
    return tmp_path / "var" / "llmws.db"


def run(capsys: pytest.CaptureFixture[str], *argv: str, stdin: str | None = None,
        monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str]:
    if stdin is not None and monkeypatch is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_db_commands(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "db", "current")
    assert code == 0 and "behind" in out
    assert run(capsys, "db", "upgrade")[0] == 0
    code, out = run(capsys, "db", "current")
    assert code == 0 and "up to date" in out
    assert run(capsys, "db", "downgrade", "base")[0] == 0
    assert "base (empty)" in run(capsys, "db", "current")[1]


def test_user_commands_need_a_migrated_database(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "users", "list")
    assert code == 1 and "llmws db upgrade" in out


def test_users_lifecycle(database: Path, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    run(capsys, "db", "upgrade")
    code, out = run(capsys, "users", "create", "Root", "--admin", "--password-stdin",
                    stdin="first-password\n", monkeypatch=monkeypatch)
    assert code == 0 and "created admin 'root'" in out
    code, out = run(capsys, "users", "create", "root", "--password-stdin", stdin="another-password\n",
                    monkeypatch=monkeypatch)
    assert code == 1 and "already exists" in out
    code, out = run(capsys, "users", "create", "weak", "--password-stdin", stdin="short\n", monkeypatch=monkeypatch)
    assert code == 1 and "at least 8" in out
    run(capsys, "users", "create", "bob", "--password-stdin", stdin="bobs-password\n", monkeypatch=monkeypatch)
    assert run(capsys, "users", "set-password", "bob", "--password-stdin", stdin="bobs-new-password\n",
               monkeypatch=monkeypatch)[0] == 0
    assert run(capsys, "users", "disable", "bob")[0] == 0
    code, out = run(capsys, "users", "disable", "root")
    assert code == 1 and "last active admin" in out
    code, out = run(capsys, "users", "list")
    lines = out.strip().splitlines()
    assert len(lines) == 3
    assert lines[1].split()[1:4] == ["root", "admin", "yes"]
    assert lines[2].split()[1:4] == ["bob", "user", "no"]
    code, out = run(capsys, "users", "enable", "nobody")
    assert code == 1 and "no user named 'nobody'" in out


def test_bad_setting_stops_with_its_name(database: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMWS_PORT", "not-a-port")
    code, out = run(capsys, "db", "current")
    assert code == 2 and "LLMWS_PORT" in out


def test_unknown_revision_and_unreachable_database_are_clear_errors(
    database: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = run(capsys, "db", "downgrade", "no-such-revision")
    assert code == 1 and "no-such-revision" in out and "Traceback" not in out
    monkeypatch.setenv("LLMWS_DATABASE_URL", "postgresql://postgres@127.0.0.1:9/gone")
    code, out = run(capsys, "users", "list")
    assert code == 1 and "cannot use the database" in out


def test_models_list_and_convert(database: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> None:
    monkeypatch.setenv("LLMWS_MODEL_DIRS", str(tiny_model_dir.parent))
    code, out = run(capsys, "models", "list")
    assert code == 0
    line = next(line for line in out.splitlines() if "tiny-llama" in line)
    assert line.startswith("*") and "safetensors" in line and "LlamaForCausalLM" in line
    code, out = run(capsys, "models", "convert", "tiny-llama")
    assert code == 1 and "not a GGUF" in out
    code, out = run(capsys, "models", "convert", "nothing-like-it")
    assert code == 1 and "no model named" in out
    monkeypatch.setenv("LLMWS_MODEL_DIRS", str(database.parent / "empty"))
    assert "llmws models pull-demo" in run(capsys, "models", "list")[1]
