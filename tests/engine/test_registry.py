"""What the registry says of a GGUF, and that it reads each file once: the reader parses every field, the
tokenizer's vocabulary included (seconds for the demo model), and every scan (start, `llmws models list`, the admin
model list) would pay that again."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import gguf
import pytest

from engine.demo_model import demo_model_path
from engine.registry import _gguf_facts, scan
from tests.model_fixtures import REPO


def test_a_gguf_is_described_and_read_once_per_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "models" / "demo"
    folder.mkdir(parents=True)
    copy = Path(shutil.copy(demo_model_path(REPO / "models"), folder))  # a copy: its mtime changes below
    reads: list[str] = []
    reader = gguf.GGUFReader

    def counting(path: str, *args: object, **kwargs: object) -> gguf.GGUFReader:
        reads.append(path)
        return reader(path, *args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", counting)
    _gguf_facts.cache_clear()
    [info] = scan([tmp_path / "models"])
    assert (info.name, info.format, info.architecture, info.dtype) == ("demo", "gguf", "llama", "Q4_1")
    assert 130e6 < (info.parameters or 0) < 140e6 and info.context_length == 8192
    assert info.size_bytes == copy.stat().st_size
    assert scan([tmp_path / "models"]) == [info] and len(reads) == 1
    os.utime(copy, ns=(copy.stat().st_atime_ns, copy.stat().st_mtime_ns + 10**9))  # replaced in place
    scan([tmp_path / "models"])
    assert len(reads) == 2
