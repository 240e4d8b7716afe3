"""The local model the API serves: chosen from the registry at start, switched or unloaded on request.

Only one model is resident at a time. A switch refuses while requests are running (the caller may retry once they
drain), then unloads the old model, frees the allocator's caches and loads the new one, reporting each stage.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig

from engine.batch_cache import check_batchable
from engine.errors import EngineBusy, ModelInUse, ModelLoadFailed, NoModelLoaded, UnsupportedModel
from engine.interface import DecodeMode
from engine.loader import LoadedModel, Runtime, converted_copies, load
from engine.local import LocalEngine
from engine.memory import context_budget, prefill_activation_bytes
from engine.registry import ModelInfo, scan, select
from engine.tool_calls import Family

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class HostConfig:
    model_dirs: list[Path]
    default_model: str | None
    cache_dir: Path
    runtime: Runtime
    max_batch_size: int = 32
    max_queue: int = 256
    prefix_cache_bytes: int = 0
    decode: DecodeMode = "auto"
    kv_budget_bytes: int | None = None  # None: from free memory (engine/memory.py)
    prefill_chunk_tokens: int = 512
    # A model's tool-call parser by model name, where the one its chat template suggests is wrong.
    tool_parsers: Mapping[str, Family] = field(default_factory=dict)


class ModelHost:
    def __init__(self, config: HostConfig) -> None:
        self.config = config
        self.loaded: LoadedModel | None = None
        self.local: LocalEngine | None = None
        self.reason = "no model loaded yet"
        self._switching = asyncio.Lock()

    @property
    def loading(self) -> bool:
        """A model is being loaded (at start, or a switch): its requests cannot be served yet."""
        return self._switching.locked()

    def available(self) -> list[ModelInfo]:
        return scan(self.config.model_dirs)

    async def start(self) -> None:
        """Load the model the selection rule picks; without one, stay up and say why."""
        models = await asyncio.to_thread(self.available)
        preferred = self.config.model_dirs[0] if self.config.model_dirs else None
        chosen = select(models, self.config.default_model, preferred)
        if chosen is None:
            folders = ", ".join(str(folder) for folder in self.config.model_dirs) or "no folders configured"
            self.reason = f"no model found in {folders}; add one or run `llmws models pull-demo`"
            log.warning("starting without a model: %s", self.reason)
            return
        await self.switch(chosen)

    def engine(self) -> LocalEngine:
        if self.local is None:
            raise NoModelLoaded(self.reason)
        return self.local

    async def switch(self, info: ModelInfo, progress: Progress | None = None) -> LoadedModel:
        report = progress or (lambda stage, fraction: log.info("model switch: %s (%.0f%%)", stage, fraction * 100))
        async with self._switching:
            if self.local is not None and (self.local.stats().running or self.local.stats().queue_depth):
                raise EngineBusy("requests are running on the current model; retry when they have finished")
            if info.format == "safetensors":  # refused before the current model is unloaded (a GGUF: after loading)
                await self._check_config(info)
            report("unloading", 0.0)
            await asyncio.to_thread(self._unload)
            report(f"loading {info.name}", 0.1)
            self.reason = f"loading {info.name}"
            try:
                loaded = await asyncio.to_thread(load, info, cache_dir=self.config.cache_dir,
                                                 runtime=self.config.runtime)
                check_batchable(loaded.model.config)
            except UnsupportedModel as exc:
                self.reason = f"{info.name} cannot be served: {exc.message}"
                raise
            except Exception as exc:
                self.reason = f"loading {info.name} failed: {type(exc).__name__}: {exc}"
                raise ModelLoadFailed(self.reason) from exc
            config = self.config
            activations = prefill_activation_bytes(loaded.model.config, loaded.runtime.torch_dtype,
                                                   config.prefill_chunk_tokens, config.max_batch_size)
            budget = context_budget(loaded.model.config, loaded.runtime.torch_dtype, loaded.runtime.device,
                                    reserved_bytes=config.prefix_cache_bytes + activations,
                                    kv_budget_bytes=config.kv_budget_bytes)
            self.local = LocalEngine(loaded.model, loaded.tokenizer, max_context=budget.max_context,
                                     max_batch_size=config.max_batch_size, max_queue=config.max_queue,
                                     prefix_cache_bytes=config.prefix_cache_bytes, decode=config.decode,
                                     kv_budget_bytes=budget.kv_budget_bytes,
                                     prefill_chunk_tokens=config.prefill_chunk_tokens,
                                     tool_parser=config.tool_parsers.get(info.name))
            self.loaded = loaded
            log.info("serving %s: %s; max context %d tokens, KV budget %d bytes for the batch (%d a token)",
                     info.name, loaded.runtime.reason, self.local.max_context, budget.kv_budget_bytes,
                     budget.kv_bytes_per_token)
            report(f"serving {info.name}", 1.0)
            return loaded

    async def _check_config(self, info: ModelInfo) -> None:
        try:
            await asyncio.to_thread(lambda: check_batchable(AutoConfig.from_pretrained(info.path)))
        except UnsupportedModel as exc:
            raise UnsupportedModel(f"{info.name} cannot be served: {exc.message}", param="model") from exc
        except Exception as exc:  # an unknown model type, a config that needs remote code, a broken file
            raise ModelLoadFailed(f"reading {info.name}'s config failed: {type(exc).__name__}: {exc}") from exc

    async def unload(self) -> None:
        async with self._switching:
            if self.local is not None and (self.local.stats().running or self.local.stats().queue_depth):
                raise EngineBusy("requests are running on the current model; retry when they have finished")
            await asyncio.to_thread(self._unload)
            self.reason = "the model was unloaded"

    async def delete(self, info: ModelInfo) -> Path:
        """Delete a model from disk: the entry of its model folder that holds it (a file, or a folder with
        everything in it), and the converted copy of a GGUF in the cache. Never the loaded model, never anything
        outside the scanned folders."""
        async with self._switching:
            if self.loaded is not None and self.loaded.info.path == info.path:
                raise ModelInUse(f"{info.name} is loaded; switch to another model or unload it first",
                                 param="model")
            root = info.model_dir.resolve()
            target = info.path.resolve()
            if not target.is_relative_to(root) or target == root:
                raise ModelInUse(f"{info.name} is not inside a managed model folder", param="model")
            entry = root / target.relative_to(root).parts[0]
            copies = await asyncio.to_thread(converted_copies, entry, self.config.cache_dir)
            await asyncio.to_thread(shutil.rmtree if entry.is_dir() else entry.unlink, entry)
            for copy in copies:
                await asyncio.to_thread(shutil.rmtree, copy, True)
            log.info("deleted model %s (%s%s)", info.name, entry, "".join(f", {copy}" for copy in copies))
            return entry

    def _unload(self) -> None:
        # Out of reach first, so no new request is submitted to an engine that is stopping.
        local, self.local, self.loaded = self.local, None, None
        if local is not None:
            local.close()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def metadata(self) -> dict[str, Any] | None:
        if self.loaded is None or self.local is None:
            return None
        return {**self.loaded.metadata(), "max_context": self.local.max_context,
                "kv_budget_bytes": self.local.scheduler.stats().kv_budget_bytes,
                "decode": self.local.scheduler.decode}

    async def close(self) -> None:
        async with self._switching:  # a switch finishing after shutdown would leak its model
            await asyncio.to_thread(self._unload)
