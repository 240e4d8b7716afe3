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
    kv_budget_bytes: int  # what the whole batch's KV cache may hold
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


def context_budget(config: PretrainedConfig, dtype: torch.dtype, device: str, reserved_bytes: int = 0,
                   kv_budget_bytes: int | None = None) -> ContextBudget:
    """The batch's KV budget (free memory less a margin and less what is reserved for other caches and the
    prefill's activations, unless given) and the longest single request it holds, never beyond the model's own
    context length."""
    per_token = kv_bytes_per_token(config, dtype)
    free = free_memory_bytes(device)
    usable = max(0, free - max(MIN_SAFETY_BYTES, int(free * SAFETY_FRACTION)) - reserved_bytes)
    budget = usable if kv_budget_bytes is None else kv_budget_bytes
    fits = budget // per_token
    model_context = getattr(config, "max_position_embeddings", None)
    return ContextBudget(max_context=int(min(fits, model_context) if model_context else fits),
                         kv_bytes_per_token=per_token, kv_budget_bytes=budget, free_bytes=free,
                         model_context=model_context)


def prefill_activation_bytes(config: PretrainedConfig, dtype: torch.dtype, chunk_tokens: int, rows: int) -> int:
    """A rough bound on one prefill chunk's transient memory: per token the hidden states, the q/k/v and attention
    outputs and the MLP's three intermediate tensors of one layer, plus the float32 logits of the last column of
    every row. Chunking bounds it, so it is reserved once instead of counted per admission."""
    text = config.get_text_config(decoder=True)
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    per_token = 4 * text.hidden_size + (2 * heads + 2 * kv_heads) * head_dim + 3 * text.intermediate_size
    element = torch.tensor([], dtype=dtype).element_size()
    return chunk_tokens * per_token * element + rows * text.vocab_size * 4
