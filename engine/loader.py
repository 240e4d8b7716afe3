"""Loading a model with transformers on the best device here, converting a GGUF once into a safetensors cache.

Choices, all logged and reported in the model's metadata: CUDA when available (bf16 on compute capability ≥ 8.0,
fp16 below; `flash_attention_2` when `flash_attn` imports there, else `sdpa`), otherwise the CPU with SDPA and the
weight format `LLMWS_CPU_WEIGHTS` asks for (engine/weights.py: bfloat16 by default where the CPU has it natively).
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
from typing import Any, cast

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from engine.interface import CpuWeights, WeightFormat
from engine.registry import ModelInfo
from engine.weights import apply_cpu_weights, compute_dtype, resolve, weight_bytes

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".llmws-complete"
STORED_DTYPES = ("float32", "bfloat16")  # what a GGUF is converted to: the weights' own dtype, or float32 to quantize


@dataclass(frozen=True)
class Runtime:
    device: str
    dtype: str  # what activations, norms and the KV cache compute in
    attention: str
    threads: int | None
    reason: str
    weights: str  # the weights' format: float32, bfloat16 or int8 / int4 on the CPU; the dtype on a GPU

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


def choose_runtime(*, cpu_threads: int | None = None, force_cpu: bool = False,
                   cpu_weights: CpuWeights = "auto") -> Runtime:
    if torch.cuda.is_available() and not force_cpu:
        major, minor = torch.cuda.get_device_capability()
        dtype = "bfloat16" if major >= 8 else "float16"
        flash = major >= 8 and importlib.util.find_spec("flash_attn") is not None
        attention = "flash_attention_2" if flash else "sdpa"
        reason = (f"CUDA {torch.cuda.get_device_name()} (compute {major}.{minor}): {dtype}, "
                  f"{attention}{'' if flash else ' (flash_attn not importable or GPU too old)'}")
        return Runtime("cuda", dtype, attention, None, reason, dtype)
    if cpu_threads:
        torch.set_num_threads(cpu_threads)
    weights = resolve(cpu_weights)
    dtype = str(compute_dtype(weights)).removeprefix("torch.")
    asked = "" if cpu_weights == weights else f" ({cpu_weights})"
    return Runtime("cpu", dtype, "sdpa", torch.get_num_threads(),
                   f"CPU with {torch.get_num_threads()} threads: {weights} weights{asked}, {dtype} compute, sdpa "
                   "(no CUDA device)", weights)


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
                "weight_bytes": weight_bytes(self.model),
                "source": str(self.source)}


def converted_path(gguf_path: Path, cache_dir: Path, dtype: str = "float32") -> Path:
    """Where this version of the GGUF (its path, size and mtime) is kept converted to ``dtype``."""
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir / f"{gguf_path.stem}-{key}{'' if dtype == 'float32' else '-' + dtype}"


def converted_copies(removed: Path, cache_dir: Path) -> list[Path]:
    """The converted copies of every GGUF at or under ``removed`` (a file or a folder), of any version: each
    copy's marker names the GGUF it was made from. Called before ``removed`` is deleted."""
    removed = removed.resolve()
    ggufs = [removed] if removed.is_file() else sorted(removed.rglob("*.gguf")) if removed.is_dir() else []
    copies = {converted_path(gguf, cache_dir, dtype) for gguf in ggufs if gguf.is_file() for dtype in STORED_DTYPES}
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


def converted_folder(gguf_path: Path, cache_dir: Path, dtype: str = "float32") -> Path:
    """A safetensors copy of a GGUF (dequantized to ``dtype``), made once: loading it takes a fraction of a second.
    Processes that want the same copy at once wait for the first to make it (two converting into one staging folder
    each deleted the other's files)."""
    target = converted_path(gguf_path, cache_dir, dtype)
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
                                                     dtype=getattr(torch, dtype))
        if getattr(model, "hf_quantizer", None) is not None:
            # The dequantized weights are plain tensors; without this the GGUF quantizer refuses to serialise.
            model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / COMPLETE_MARKER).write_text(str(gguf_path.resolve()))  # which GGUF: deleted with it
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def stored_dtype(runtime: Runtime) -> str:
    """The dtype a GGUF is converted to for this runtime: bfloat16 for bfloat16 weights (half the disk and the
    load), else float32, which int8 and int4 quantize from (the GGUF's own 4-bit grid survives float32 exactly)."""
    return "bfloat16" if runtime.weights == "bfloat16" else "float32"


def load(info: ModelInfo, *, cache_dir: Path, runtime: Runtime) -> LoadedModel:
    source = converted_folder(info.path, cache_dir, stored_dtype(runtime)) if info.format == "gguf" else info.path
    log.info("loading %s from %s on %s", info.name, source, runtime.reason)
    tokenizer = AutoTokenizer.from_pretrained(source)
    quantized = runtime.device == "cpu" and runtime.weights in ("int8", "int4")
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32 if quantized else runtime.torch_dtype,
                                                 attn_implementation=runtime.attention)
    if quantized:
        apply_cpu_weights(model, cast(WeightFormat, runtime.weights))
    model.to(runtime.device).eval()
    return LoadedModel(info=info, model=model, tokenizer=tokenizer, runtime=runtime, source=source)
