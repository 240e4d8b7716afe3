"""The running batch's KV cache: left-padded rows of different lengths, merged on join and pruned on leave.

Rows are aligned at the right (the newest token), so one decode step appends one column for everybody. A mask
marks the real positions. Joining rows are left-padded to the common length; when rows leave, columns that are
padding for every remaining row are cut off the left again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)
from transformers import DynamicCache, PretrainedConfig
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from engine.errors import UnsupportedModel

LayerKV = tuple[torch.Tensor, torch.Tensor]  # one layer's keys and values, each [rows, kv_heads, tokens, head_dim]


class GrowableLayer(DynamicLayer):
    """A layer whose keys and values live in buffers with room to spare, so a decode step writes one column in
    place instead of copying the whole cache (`DynamicLayer` concatenates: a fifth of a CPU step at batch 16)."""

    # The most columns the buffers may take (None: no limit): the scheduler sets the batch's planned width, so the
    # spare room never takes the cache past its memory budget (engine/batch_memory.py).
    column_limit: int | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.keys.shape[-2] if self.keys.dim() == 4 else 0
        needed = length + key_states.shape[-2]
        if self._key_buffer is None or needed > self._key_buffer.shape[-2]:
            self._reserve(needed, key_states, value_states, length)
        assert self._key_buffer is not None and self._value_buffer is not None
        self._key_buffer[..., length:needed, :] = key_states
        self._value_buffer[..., length:needed, :] = value_states
        self.keys = self._key_buffer[..., :needed, :]
        self.values = self._value_buffer[..., :needed, :]
        return self.keys, self.values

    def adopt(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Take new tensors (after rows joined or left); the next update moves them into fresh buffers."""
        self.keys, self.values = keys, values
        self._key_buffer = self._value_buffer = None

    def release(self) -> None:
        """Free this layer's memory (a joining cache, once its rows are merged)."""
        if self.is_initialized:
            self.adopt(self.keys.new_empty(0), self.values.new_empty(0))

    def nbytes(self) -> int:
        """What the layer really holds: whole buffers and storages, not the views the model sees."""
        if not self.is_initialized:
            return 0
        return self.keys.untyped_storage().nbytes() + self.values.untyped_storage().nbytes()

    def _reserve(self, needed: int, key_states: torch.Tensor, value_states: torch.Tensor, length: int) -> None:
        capacity = needed + max(64, needed // 2)
        if self.column_limit is not None:
            capacity = max(needed, min(capacity, self.column_limit))
        batch, heads, _, dim = key_states.shape
        key_buffer = key_states.new_empty((batch, heads, capacity, dim))
        value_buffer = value_states.new_empty((batch, value_states.shape[1], capacity, value_states.shape[-1]))
        if length:
            key_buffer[..., :length, :] = self.keys
            value_buffer[..., :length, :] = self.values
        self._key_buffer, self._value_buffer = key_buffer, value_buffer


def check_batchable(config: PretrainedConfig) -> None:
    """Refuse, before anything runs, a model with layers whose cached state cannot be cut into rows and put back
    together: hybrid models with recurrent or linear-attention layers, and KV-sharing layers."""
    layer_types = getattr(config.get_text_config(decoder=True), "layer_types", None) or []
    if "chunked_attention" in layer_types:  # Llama 4: its chunks are cut in cache columns, untested with padding
        raise UnsupportedModel("chunked attention (Llama 4) is not supported yet", param="model")
    try:
        layers = new_cache(config).layers
    except ValueError as exc:  # transformers refuses some layer layouts in a DynamicCache at all
        raise UnsupportedModel(f"this model's cache layout is not supported: {exc}", param="model") from exc
    others = sorted({type(layer).__name__ for layer in layers if not isinstance(layer, GrowableLayer)})
    if others:
        raise UnsupportedModel(f"this model has cache layers the engine cannot batch ({', '.join(others)}); only "
                               "attention models (full or sliding-window) are served", param="model")


def has_sliding_window(config: PretrainedConfig) -> bool:
    return any(type(layer) is DynamicSlidingWindowLayer for layer in DynamicCache(config=config).layers)


def new_cache(config: PretrainedConfig) -> DynamicCache:
    """A cache for the model, with growable layers wherever the model uses attention.

    Sliding-window layers get a full-length layer too: transformers' own keeps only the last window of columns and
    cannot be left-padded or merged, while the sliding-window mask (built from ``config.sliding_window``) limits
    what each query sees either way. Memory is counted as full attention already (engine/memory.py)."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowableLayer() if type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) else layer
                    for layer in cache.layers]
    return cache


@dataclass
class BatchCache:
    cache: DynamicCache
    mask: torch.Tensor  # [rows, columns], 1 where a real token is cached

    @classmethod
    def from_rows(cls, config: PretrainedConfig, rows: list[list[LayerKV] | None], device: torch.device
                  ) -> BatchCache:
        """A cache holding these rows' keys and values (None: a row with nothing cached yet), right-aligned."""
        lengths = [layers[0][0].shape[-2] if layers else 0 for layers in rows]
        width = max(lengths)
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        for row, length in enumerate(lengths):
            mask[row, width - length:] = 1
        cache = new_cache(config)
        if width:
            template = next(layers for layers in rows if layers)
            for index, layer in enumerate(cache.layers):
                keys = torch.cat([_left_pad(layers[index][0] if layers else _empty_row(template[index][0]), width)
                                  for layers in rows])
                values = torch.cat([_left_pad(layers[index][1] if layers else _empty_row(template[index][1]), width)
                                    for layers in rows])
                layer.lazy_initialization(keys, values)
                _set(layer, keys, values)
        return cls(cache, mask)

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    def row_layers(self, row: int) -> list[LayerKV]:
        """One row's keys and values at its real positions, in order, as a batch of one (copies)."""
        columns = self.mask[row].nonzero().squeeze(1)
        return [(layer.keys[row:row + 1].index_select(2, columns), layer.values[row:row + 1].index_select(2, columns))
                for layer in self.cache.layers]

    def length(self, row: int) -> int:
        """How many real tokens the row has cached."""
        return int(self.mask[row].sum())

    def append_column(self) -> None:
        """Make room in the mask for the token every row is about to add."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.rows, 1))], dim=1)

    def spans(self) -> list[int]:
        """Per row, the columns from its first real token to the newest: what it occupies of the batch's width."""
        used = self.mask.any(dim=1).tolist()
        first = self.mask.argmax(dim=1).tolist()  # the first 1
        return [self.width - start if row_used else 0 for start, row_used in zip(first, used, strict=True)]

    def limit_columns(self, columns: int) -> None:
        for layer in self.cache.layers:
            if isinstance(layer, GrowableLayer):
                layer.column_limit = columns

    def positions(self) -> torch.Tensor:
        """Each row's position for its next token: how many real tokens it has cached."""
        return (self.mask.sum(dim=1, keepdim=True) - 1).clamp(min=0)

    def merge(self, other: BatchCache) -> None:
        """Append ``other``'s rows below ours, left-padding whichever is shorter. ``other`` is emptied layer by
        layer as it goes, so the merge never holds both caches whole at once."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            _set(mine, torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)], dim=0),
                 torch.cat([_left_pad(mine.values, width), _left_pad(theirs.values, width)], dim=0))
            _release(theirs)
        self.mask = torch.cat([_left_pad_mask(self.mask, width), _left_pad_mask(other.mask, width)], dim=0)

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows, then drop the columns that are now padding for all of them."""
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.mask = self.mask.index_select(0, index)
        used = self.mask.sum(dim=0).nonzero()
        start = int(used[0]) if used.numel() else self.mask.shape[1]
        for layer in self.cache.layers:
            _set(layer, layer.keys.index_select(0, index)[..., start:, :],
                 layer.values.index_select(0, index)[..., start:, :])
        self.mask = self.mask[:, start:]

    def nbytes(self) -> int:
        return sum(layer.nbytes() if isinstance(layer, GrowableLayer) else layer.keys.nbytes + layer.values.nbytes
                   for layer in self.cache.layers if getattr(layer, "keys", None) is not None)

    def release_layer(self, index: int) -> None:
        _release(self.cache.layers[index])


def _set(layer: DynamicLayer, keys: torch.Tensor, values: torch.Tensor) -> None:
    if isinstance(layer, GrowableLayer):
        layer.adopt(keys, values)
    else:
        layer.keys, layer.values = keys, values


def _release(layer: DynamicLayer) -> None:
    if isinstance(layer, GrowableLayer):
        layer.release()
    elif layer.is_initialized:
        layer.keys, layer.values = layer.keys[:, :, :0], layer.values[:, :, :0]


def _empty_row(like: torch.Tensor) -> torch.Tensor:
    return like.new_zeros((1, like.shape[1], 0, like.shape[3]))


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - tensor.shape[-2]
    return F.pad(tensor, (0, 0, missing, 0)) if missing else tensor


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - mask.shape[1]
    return F.pad(mask, (missing, 0)) if missing else mask
