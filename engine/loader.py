"""Loading a model with transformers on the best device here, converting a GGUF once into a safetensors cache.

Choices, all logged and reported in the model's metadata: CUDA when available (bf16 on compute capability ≥ 8.0,
fp16 below; `flash_attention_2` when `flash_attn` imports there, else `sdpa`), otherwise the CPU in fp32 with SDPA.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from engine.registry import ModelInfo

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".llmws-complete"


@dataclass(frozen=True)
class Runtime:
    device: str
    dtype: str
    attention: str
    threads: int | None
    reason: str

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


def choose_runtime(*, cpu_threads: int | None = None, force_cpu: bool = False) -> Runtime:
    if torch.cuda.is_available() and not force_cpu:
        major, minor = torch.cuda.get_device_capability()
        dtype = "bfloat16" if major >= 8 else "float16"
        flash = major >= 8 and importlib.util.find_spec("flash_attn") is not None
        attention = "flash_attention_2" if flash else "sdpa"
        reason = (f"CUDA {torch.cuda.get_device_name()} (compute {major}.{minor}): {dtype}, "
                  f"{attention}{'' if flash else ' (flash_attn not importable or GPU too old)'}")
        return Runtime("cuda", dtype, attention, None, reason)
    if cpu_threads:
        torch.set_num_threads(cpu_threads)
    return Runtime("cpu", "float32", "sdpa", torch.get_num_threads(),
                   f"CPU with {torch.get_num_threads()} threads: float32, sdpa (no CUDA device)")


@dataclass
class LoadedModel:
    info: ModelInfo
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    runtime: Runtime
    source: Path  # the folder actually loaded (the converted cache for a GGUF)

    def metadata(self) -> dict[str, Any]:
        return {"name": self.info.name, "format": self.info.format, "architecture": self.info.architecture,
                "parameters": self.info.parameters, "context_length": self.info.context_length,
                "stored_dtype": self.info.dtype, "size_bytes": self.info.size_bytes, **asdict(self.runtime),
                "source": str(self.source)}


def converted_path(gguf_path: Path, cache_dir: Path) -> Path:
    """Where this version of the GGUF (its path, size and mtime) is kept converted."""
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir / f"{gguf_path.stem}-{key}"


def converted_copies(removed: Path, cache_dir: Path) -> list[Path]:
    """The converted copies of every GGUF at or under ``removed`` (a file or a folder), of any version: each
    copy's marker names the GGUF it was made from. Called before ``removed`` is deleted."""
    removed = removed.resolve()
    ggufs = [removed] if removed.is_file() else sorted(removed.rglob("*.gguf")) if removed.is_dir() else []
    copies = {converted_path(gguf, cache_dir) for gguf in ggufs if gguf.is_file()}
    for marker in cache_dir.glob(f"*/{COMPLETE_MARKER}") if cache_dir.is_dir() else []:
        made_from = marker.read_text().strip()
        if made_from and Path(made_from).is_relative_to(removed):
            copies.add(marker.parent)
    return sorted(copy for copy in copies if copy.is_dir())


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Held by one process at a time (replicas, `make run` beside a test run share the cache): the kernel drops
    the lock when its holder dies, so a crashed conversion never blocks the next."""
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def converted_folder(gguf_path: Path, cache_dir: Path) -> Path:
    """A safetensors copy of a GGUF (dequantized), made once: loading it takes a fraction of a second. Processes
    that want the same copy at once wait for the first to make it (two converting into one staging folder each
    deleted the other's files)."""
    target = converted_path(gguf_path, cache_dir)
    if (target / COMPLETE_MARKER).exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.with_name(target.name + ".lock")):
        if (target / COMPLETE_MARKER).exists():  # made by another process while this one waited
            return target
        log.info("converting %s to safetensors in %s (once)", gguf_path.name, target)
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)  # left by a process that died converting
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
        if getattr(model, "hf_quantizer", None) is not None:
            # The dequantized weights are plain tensors; without this the GGUF quantizer refuses to serialise.
            model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / COMPLETE_MARKER).write_text(str(gguf_path.resolve()))  # which GGUF: deleted with it
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def load(info: ModelInfo, *, cache_dir: Path, runtime: Runtime) -> LoadedModel:
    source = converted_folder(info.path, cache_dir) if info.format == "gguf" else info.path
    log.info("loading %s from %s on %s", info.name, source, runtime.reason)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=runtime.torch_dtype,
                                                 attn_implementation=runtime.attention)
    model.to(runtime.device).eval()
    return LoadedModel(info=info, model=model, tokenizer=tokenizer, runtime=runtime, source=source)
