"""How long a context fits: the real KV-cache size per token against the memory free on the model's device."""

from __future__ import annotations

from dataclasses import dataclass

import psutil
import torch
from transformers import PretrainedConfig

SAFETY_FRACTION = 0.10
MIN_SAFETY_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class ContextBudget:
    max_context: int
    kv_bytes_per_token: int
    free_bytes: int
    model_context: int | None


def kv_bytes_per_token(config: PretrainedConfig, dtype: torch.dtype) -> int:
    """2 (keys and values) × layers × KV heads × head dim × bytes per element."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * torch.tensor([], dtype=dtype).element_size()


def free_memory_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info()[0]
    return psutil.virtual_memory().available


def context_budget(config: PretrainedConfig, dtype: torch.dtype, device: str, reserved_bytes: int = 0
                   ) -> ContextBudget:
    """The longest single request that fits: free memory less a margin and less what is reserved for other
    caches, over the KV bytes per token, and never beyond the model's own context length."""
    per_token = kv_bytes_per_token(config, dtype)
    free = free_memory_bytes(device)
    usable = max(0, free - max(MIN_SAFETY_BYTES, int(free * SAFETY_FRACTION)) - reserved_bytes)
    fits = usable // per_token
    model_context = getattr(config, "max_position_embeddings", None)
    return ContextBudget(max_context=int(min(fits, model_context) if model_context else fits),
                         kv_bytes_per_token=per_token, free_bytes=free, model_context=model_context)
