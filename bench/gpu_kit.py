"""What a lent GPU machine needs to run the engine's GPU tests and bench/engine_gpu.py, in `var/gpu-kit/`.

That machine has PyTorch and transformers but not this project's web and database stack, cannot download, and
takes at most 64 MiB with the working tree. So the kit holds the demo model's tokenizer (the model is too large
to carry; the GPU tests and the benchmark build their own random-weight models) and the wheels of the test plugins
it lacks. `make gpu-kit` runs this; docs/engine.md ("On a GPU") gives the one command to run there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from transformers import AutoTokenizer

from engine.demo_model import demo_model_path
from engine.loader import converted_folder

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / "var" / "gpu-kit"
WHEELS = ["pytest-asyncio"]  # pure Python; the device image has pytest itself


def main() -> None:
    shutil.rmtree(KIT, ignore_errors=True)
    folder = converted_folder(demo_model_path(REPO / "models"), REPO / "var" / "cache" / "converted")
    AutoTokenizer.from_pretrained(folder).save_pretrained(KIT / "tokenizer")
    pins = [f"{name}=={version(name)}" for name in WHEELS]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--dest", str(KIT / "wheels"), *pins], check=True)
    size = sum(path.stat().st_size for path in KIT.rglob("*") if path.is_file())
    print(f"{KIT.relative_to(REPO)}: {size / 2**20:.1f} MiB (tokenizer, {', '.join(pins)})")


if __name__ == "__main__":
    main()
