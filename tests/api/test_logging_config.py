"""The log file: owner-only from the first line to the last rotation (the logs quote users and conversations)."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from api import logging_config
from api.logging_config import configure_logging
from tests.conftest import make_settings


@pytest.fixture
def server_logging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The server's logging set up in a fresh data folder under the usual umask, with tiny rotations."""
    monkeypatch.setattr(logging_config, "MAX_LOG_BYTES", 200)
    previous_umask, previous_level = os.umask(0o022), logging.getLogger().level
    configure_logging(make_settings(tmp_path / "var", "sqlite+aiosqlite://"))
    yield tmp_path / "var" / "logs"
    root = logging.getLogger()
    for handler in [handler for handler in root.handlers if getattr(handler, "_llmws", False)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(previous_level)
    os.umask(previous_umask)


def test_log_files_and_their_rotations_are_owner_only(server_logging: Path) -> None:
    for n in range(10):
        logging.getLogger("llmws.test").warning("a line long enough to rotate the file soon: %d", n)
    files = sorted(path.name for path in server_logging.iterdir())
    assert "llmws.log" in files and "llmws.log.1" in files
    assert {name: stat.S_IMODE((server_logging / name).stat().st_mode) for name in files} == dict.fromkeys(files,
                                                                                                            0o600)
    assert stat.S_IMODE(server_logging.stat().st_mode) == 0o700
