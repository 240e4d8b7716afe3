"""A prefill fed to the model a chunk of columns per loop turn, so the running batch gets a decode step between
chunks instead of waiting for a long prompt's whole forward (and its activations stay bounded by the chunk)."""

from __future__ import annotations

import torch

from engine.batch_cache import BatchCache


class ChunkedPrefill:
    """The joining rows' uncomputed prompt tokens, left-padded into one matrix, and their own cache (holding what
    the prefix cache gave them) that each chunk extends."""

    def __init__(self, cache: BatchCache, suffixes: list[list[int]], pad_token_id: int) -> None:
        self.cache = cache
        self.columns = max(map(len, suffixes))
        self.input_ids = torch.full((len(suffixes), self.columns), pad_token_id, dtype=torch.long)
        self.mask = torch.zeros((len(suffixes), self.columns), dtype=torch.long, device=cache.mask.device)
        for row, suffix in enumerate(suffixes):
            self.input_ids[row, self.columns - len(suffix):] = torch.tensor(suffix)
            self.mask[row, self.columns - len(suffix):] = 1
        self.fed = 0
        cache.limit_columns(cache.width + self.columns)  # buffers of exactly the final width, no spare room

    @property
    def rows(self) -> int:
        return self.input_ids.shape[0]

    @property
    def done(self) -> bool:
        return self.fed == self.columns

    def next_chunk(self, columns: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``columns`` columns' token ids and positions; the cache's mask grows to cover them."""
        end = min(self.columns, self.fed + columns)
        self.cache.mask = torch.cat([self.cache.mask, self.mask[:, self.fed:end]], dim=1)
        positions = (self.cache.mask.cumsum(dim=1) - 1).clamp(min=0)[:, -(end - self.fed):]
        input_ids = self.input_ids[:, self.fed:end]
        self.fed = end
        return input_ids, positions
