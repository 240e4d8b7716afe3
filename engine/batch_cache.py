"""The running batch's KV cache: left-padded rows of different lengths, merged on join and pruned on leave.

Rows are aligned at the right (the newest token), so one decode step appends one column for everybody. A mask
marks the real positions. Joining rows are left-padded to the common length; when rows leave, columns that are
padding for every remaining row are cut off the left again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)
from transformers import DynamicCache


@dataclass
class BatchCache:
    cache: DynamicCache
    mask: torch.Tensor  # [rows, columns], 1 where a real token is cached

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    def append_column(self) -> None:
        """Make room in the mask for the token every row is about to add."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.rows, 1))], dim=1)

    def positions(self) -> torch.Tensor:
        """Each row's position for its next token: how many real tokens it has cached."""
        return (self.mask.sum(dim=1, keepdim=True) - 1).clamp(min=0)

    def merge(self, other: BatchCache) -> None:
        """Append ``other``'s rows below ours, left-padding whichever is shorter."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)], dim=0)
            mine.values = torch.cat([_left_pad(mine.values, width), _left_pad(theirs.values, width)], dim=0)
        self.mask = torch.cat([_left_pad_mask(self.mask, width), _left_pad_mask(other.mask, width)], dim=0)

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows, then drop the columns that are now padding for all of them."""
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.mask = self.mask.index_select(0, index)
        used = self.mask.sum(dim=0).nonzero()
        start = int(used[0]) if used.numel() else self.mask.shape[1]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[..., start:, :]
            layer.values = layer.values.index_select(0, index)[..., start:, :]
        self.mask = self.mask[:, start:]

    def nbytes(self) -> int:
        return sum(layer.keys.nbytes + layer.values.nbytes for layer in self.cache.layers
                   if getattr(layer, "keys", None) is not None)


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - tensor.shape[-2]
    return F.pad(tensor, (0, 0, missing, 0)) if missing else tensor


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - mask.shape[1]
    return F.pad(mask, (missing, 0)) if missing else mask
