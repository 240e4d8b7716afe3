"""Building the engine's model host from settings, and starting it without letting a bad model stop the API."""

from __future__ import annotations

import logging
from pathlib import Path

from api.settings import Settings
from engine.host import HostConfig, ModelHost
from engine.loader import choose_runtime

log = logging.getLogger(__name__)


def build_model_host(settings: Settings) -> ModelHost:
    return ModelHost(HostConfig(
        model_dirs=_scanned_folders(settings), default_model=settings.default_model,
        cache_dir=settings.model_cache_dir,
        runtime=choose_runtime(cpu_threads=settings.torch_threads, cpu_weights=settings.cpu_weights),
        max_batch_size=settings.max_batch_size, max_queue=settings.max_queue,
        prefix_cache_bytes=settings.prefix_cache_mb * 1024 * 1024, decode=settings.decode,
        kv_budget_bytes=settings.kv_budget_mb * 1024 * 1024 if settings.kv_budget_mb else None,
        prefill_chunk_tokens=settings.prefill_chunk_tokens, tool_parsers=dict(settings.tool_parsers),
    ))


def _scanned_folders(settings: Settings) -> list[Path]:
    folders = list(settings.model_dirs)
    if not any(folder.resolve() == settings.download_dir.resolve() for folder in folders):
        folders.append(settings.download_dir)  # what an admin downloads must be servable
    return folders


async def start_model_host(host: ModelHost) -> None:
    try:
        await host.start()
    except Exception as exc:  # noqa: BLE001 (a broken model file must leave the API up and say why)
        log.exception("could not load a model")
        host.reason = f"loading the model failed: {type(exc).__name__}: {exc}"
