"""Converting a GGUF into the shared safetensors cache, as several processes (replicas, `make run` beside a test
run) do at once."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from engine.demo_model import demo_model_path
from engine.loader import COMPLETE_MARKER, converted_path
from tests.model_fixtures import REPO

CONVERT = """
import logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(message)s")
from engine.loader import converted_folder
print("folder:", converted_folder(Path(sys.argv[1]), Path(sys.argv[2])))
"""


def test_processes_converting_the_same_gguf_at_once_all_get_the_one_complete_copy(tmp_path: Path) -> None:
    gguf = tmp_path / "models" / "demo.gguf"
    gguf.parent.mkdir()
    shutil.copy(demo_model_path(REPO / "models"), gguf)
    cache = tmp_path / "cache"
    processes = [subprocess.Popen([sys.executable, "-c", CONVERT, str(gguf), str(cache)], cwd=REPO, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(3)]
    try:
        outputs = [process.communicate(timeout=300)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()

    target = converted_path(gguf, cache)
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output
        assert f"folder: {target}" in output
    # One process converted; the others waited for it rather than converting into the same staging folder.
    assert sum("converting demo.gguf" in output for output in outputs) == 1, outputs
    assert (target / COMPLETE_MARKER).read_text() == str(gguf.resolve())
    assert sorted(path.name for path in cache.iterdir() if path.is_dir()) == [target.name]
