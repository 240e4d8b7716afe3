"""bench/engine_gpu.py is run for real only on a lent GPU machine, whose time is short: it must work there at the
first try. Its `--tiny` mode runs the same code on the CPU here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from transformers import PreTrainedTokenizerBase

REPO = Path(__file__).resolve().parents[2]


def test_the_gpu_benchmark_runs_end_to_end_on_a_tiny_model(demo_folder: Path,
                                                            tokenizer: PreTrainedTokenizerBase) -> None:
    finished = subprocess.run([sys.executable, "bench/engine_gpu.py", "--tiny", "--tokens", "8", "--concurrency", "3",
                               "--tokenizer", str(demo_folder)], cwd=REPO, capture_output=True, text=True,
                              timeout=300, check=False)
    assert finished.returncode == 0, finished.stderr[-3000:]
    lines = finished.stdout.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("way"))) + 1:]
    rows = {(line[:40].strip(), int(line[40:45])): float(line.split()[-3]) for line in table[:8]}
    engine_rows = {(f"engine, {decode}{suffix}", conc) for decode in ("transformers", "static")
                   for suffix, conc in [("", 1), ("", 3), (", all in flight", 3)]}
    assert set(rows) == {("plain generate", 1), ("padded generate batch", 3)} | engine_rows, lines
    assert all(tokens_per_s > 0 for tokens_per_s in rows.values())
    assert sum(line.startswith("goal: ") for line in lines) == 4
