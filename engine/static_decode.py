"""A decode step of fixed shape for Llama-family models, over a KV cache whose addresses do not move, so that on a
GPU it is captured once in a CUDA graph and then replayed: one launch per step instead of one per operator.

transformers' forward launches every operator from Python (about twenty a layer, plus building masks). On a GPU a
decode step of a 1B model then costs that overhead, several times what reading its weights takes. This step reuses
the model's own modules (norms, projections, MLP, rotary embedding, LM head) and replaces only what is around the
cache: each running sequence owns one row ("slot") of preallocated key and value buffers, with its tokens at
columns 0..length-1; a step writes one column per row and attends over the buffer's full width through a mask.
Rows are padded to a bucket size (1, 2, 4, 8, …) and each (bucket, width) pair gets its own graph, recorded at
its first use. Growing the buffers drops the graphs; they are recorded again as needed.

Prefill stays with transformers' forward (engine/batch_cache.py); the joining rows' keys and values are then copied
into free slots.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)
from transformers import PreTrainedModel

from engine.batch_cache import BatchCache, LayerKV, has_sliding_window
from engine.interface import DecodeMode

log = logging.getLogger(__name__)

# Llama-shaped decoder layers: pre-norm, rotary attention (optionally with per-head q/k norms), gated MLP.
FAMILIES = {"llama", "mistral", "qwen2", "qwen3"}
MIN_WIDTH = 128


def static_decode_refusal(model: PreTrainedModel) -> str | None:
    """Why this model cannot use the static step (None: it can)."""
    config = model.config
    if config.model_type not in FAMILIES:
        return f"model type {config.model_type!r} is not one of {sorted(FAMILIES)}"
    if has_sliding_window(config):
        return "sliding-window attention"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "rotary_emb") or not hasattr(inner, "layers"):
        return "not laid out as model.layers with model.rotary_emb"
    if any(not hasattr(layer, "self_attn") or not hasattr(layer.self_attn, "q_proj") for layer in inner.layers):
        return "a layer without q/k/v projections"
    rope = str(getattr(inner.rotary_emb, "rope_type", "default"))
    if "dynamic" in rope or rope == "longrope":  # these recompute their frequencies from the positions seen
        return f"rope type {rope!r} depends on the sequence length"
    return None


def choose_decode(mode: DecodeMode, model: PreTrainedModel) -> Literal["transformers", "static", "graphs"]:
    """The decode path to use: ``auto`` records CUDA graphs on a GPU where the model allows, and keeps
    transformers' forward elsewhere (on a CPU the matrix products dominate, and the two measured the same)."""
    refusal = static_decode_refusal(model)
    on_gpu = model.device.type == "cuda"
    if mode == "auto":
        return "graphs" if on_gpu and refusal is None else "transformers"
    if mode != "transformers" and refusal is not None:
        log.warning("decode %s is not available for this model (%s); using transformers' forward", mode, refusal)
        return "transformers"
    if mode == "graphs" and not on_gpu:
        log.warning("CUDA graphs need a GPU; decoding with the static step, uncaptured")
        return "static"
    return mode


def bucket(count: int) -> int:
    """The smallest power of two at least ``count`` (rows padded for a recording, widths of the buffers)."""
    return 1 << max(0, count - 1).bit_length()


def buffer_width(tokens: int, max_width: int) -> int:
    """The buffers' width once grown to hold this many tokens."""
    return min(max_width, max(MIN_WIDTH, bucket(tokens)))


class SlotCache:
    """Keys and values of the running rows, one slot each, in buffers [slots, kv_heads, width, head_dim] per layer.
    Row i of the batch is slot i: rows that leave are closed up, in order, so the running rows stay slots
    0..rows-1 and a step's buffers are a prefix of the slots."""

    def __init__(self, model: PreTrainedModel, max_width: int) -> None:
        config = model.config
        self.layers = config.num_hidden_layers
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.dtype = model.dtype
        self.device = model.device
        self.max_width = max_width
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.lengths: list[int] = []  # tokens cached per running row
        self.version = 0  # bumped whenever the buffers are reallocated: recorded graphs point at the old ones
        self._allocate(1, MIN_WIDTH)

    @property
    def rows(self) -> int:
        return len(self.lengths)

    @property
    def slots(self) -> int:
        return self.keys[0].shape[0]

    @property
    def width(self) -> int:
        return self.keys[0].shape[2]

    def nbytes(self) -> int:
        return sum(buffer.nbytes for buffer in [*self.keys, *self.values])

    def length(self, row: int) -> int:
        return self.lengths[row]

    def spans(self) -> list[int]:
        """Per row, the columns it holds (its tokens, from column 0): what it occupies of the buffers' width."""
        return list(self.lengths)

    def merge(self, joining: BatchCache) -> None:
        """Copy the joining rows' real keys and values (padding left out) into the next free slots, growing the
        buffers and emptying ``joining`` layer by layer: the two are never held whole at once."""
        lengths = joining.mask.sum(dim=1).tolist()
        shape = self._grown_shape(self.rows + joining.rows, max(lengths, default=0) + 1)
        columns = [joining.mask[row].nonzero().squeeze(1) for row in range(joining.rows)]
        for index, layer in enumerate(joining.cache.layers):
            for buffers, source in ((self.keys, layer.keys), (self.values, layer.values)):
                if shape is not None:
                    buffers[index] = self._resized(buffers[index], shape)
                for row, length in enumerate(lengths):
                    buffers[index][self.rows + row, :, :length] = source[row].index_select(1, columns[row])
            joining.release_layer(index)
        self.lengths.extend(lengths)
        if shape is not None:
            self.version += 1

    def projected_bytes(self, rows: int, width: int, bytes_per_token: int) -> int:
        """What the buffers will take for this many rows of this many tokens: rounded up as ``reserve`` rounds,
        and never less than they take now (they do not shrink while rows run)."""
        columns = max(self.width, buffer_width(width, self.max_width))
        return max(self.slots, bucket(rows)) * columns * bytes_per_token

    @staticmethod
    def fresh_bytes(rows: int, width: int, max_width: int, bytes_per_token: int) -> int:
        """What buffers made for this many rows of this many tokens take, from the smallest ones up."""
        return bucket(rows) * buffer_width(width, max_width) * bytes_per_token

    def shrink(self) -> None:
        """Back to the smallest buffers, with no rows running: an earlier batch's shape must not keep a request
        that fits alone from being admitted."""
        assert not self.lengths
        self._allocate(1, MIN_WIDTH)

    def keep(self, rows: list[int]) -> None:
        """Keep these rows (ascending), moved down in order to slots 0..len(rows)-1. Buffers four times wider than
        what is left are narrowed: one long answer must not hold its width for every later batch (the slots stay,
        and so do the recorded graphs, unless the width changes)."""
        for target, source in enumerate(rows):
            if source != target:
                length = self.lengths[source]
                for buffers in (self.keys, self.values):
                    for buffer in buffers:
                        buffer[target, :, :length] = buffer[source, :, :length]
        self.lengths = [self.lengths[row] for row in rows]
        width = max(MIN_WIDTH, bucket(max(self.lengths, default=0) + 1))
        if width * 4 <= self.width:
            self._allocate(self.slots, width)

    def row_layers(self, row: int) -> list[LayerKV]:
        """One row's keys and values as a batch of one (copies), as the prefix cache keeps them."""
        length = self.lengths[row]
        return [(keys[row:row + 1, :, :length].clone(), values[row:row + 1, :, :length].clone())
                for keys, values in zip(self.keys, self.values, strict=True)]

    def reserve(self, rows: int, width: int) -> None:
        """Room for this many rows of this many tokens; grows (copying) by powers of two."""
        shape = self._grown_shape(rows, width)
        if shape is not None:
            self._allocate(shape[0], shape[2])

    def _grown_shape(self, rows: int, width: int) -> tuple[int, int, int, int] | None:
        """The buffers' shape once grown to hold this (None: they hold it already)."""
        if rows <= self.slots and width <= self.width:
            return None
        slots = max(self.slots, bucket(rows))
        grown = max(self.width, min(self.max_width, bucket(width)))
        if width > grown:
            raise ValueError(f"{width} tokens do not fit the {self.max_width}-token context")
        return (slots, self.kv_heads, grown, self.head_dim)

    def _allocate(self, slots: int, width: int) -> None:
        """New buffers of this shape, holding the running rows' tokens (both sizes are at least what they use).
        Layer by layer, in place in the lists: each old layer is freed as soon as it is copied, and a reader on
        another thread (stats) always finds a whole list."""
        shape = (slots, self.kv_heads, width, self.head_dim)
        for buffers in (self.keys, self.values):
            if not buffers:
                buffers.extend(torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.layers))
                continue
            for index, old in enumerate(buffers):
                buffers[index] = self._resized(old, shape)
        self.version += 1

    def _resized(self, old: torch.Tensor, shape: tuple[int, int, int, int]) -> torch.Tensor:
        rows, used = self.rows, max(self.lengths, default=0)
        buffer = torch.zeros(shape, dtype=self.dtype, device=self.device)
        buffer[:rows, :, :used] = old[:rows, :, :used]
        return buffer


class StaticDecoder:
    """One decode step for every running row of a ``SlotCache``, eager or replayed from CUDA graphs."""

    def __init__(self, model: PreTrainedModel, slots: SlotCache, *, graphs: bool) -> None:
        self.model = model
        self.slots = slots
        self.graphs = graphs
        inner = model.model
        self._layers = list(inner.layers)
        self._rotate: Callable[..., tuple[torch.Tensor, torch.Tensor]] = (
            sys.modules[type(self._layers[0].self_attn).__module__].apply_rotary_pos_emb)
        self._recorded: dict[tuple[int, int], _Recorded] = {}
        self.unrecordable: set[tuple[int, int]] = set()  # (rows, width) whose recording failed: run eagerly
        self._recorded_for = slots.version
        self._pool: object | None = None

    def step(self, tokens: list[int]) -> torch.Tensor:
        """Logits [rows, vocab] on the model's device for each row's next token (with graphs, a view of the
        recorded output: read it before the next step); ``tokens`` are the rows' last tokens, which this step
        appends to their caches."""
        rows = len(tokens)
        needed = max(self.slots.lengths) + 1
        self.slots.reserve(rows, needed)
        size = bucket(rows) if self.graphs else rows
        # Attend over a power-of-two prefix of the buffers' width: they may be up to 4x wider than the rows need.
        width = min(self.slots.width, max(MIN_WIDTH, bucket(needed)))
        device = self.slots.device
        token_ids = torch.zeros((size, 1), dtype=torch.long)
        token_ids[:rows, 0] = torch.tensor(tokens)
        positions = torch.zeros(size, dtype=torch.long)
        positions[:rows] = torch.tensor(self.slots.lengths)
        if self.graphs:
            logits = self._replay(token_ids.to(device), positions.to(device), size, width)
        else:
            logits = self.forward(token_ids.to(device), positions.to(device), size, width)
        self.slots.lengths = [length + 1 for length in self.slots.lengths]
        return logits[:rows]

    def forward(self, token_ids: torch.Tensor, positions: torch.Tensor, size: int, width: int) -> torch.Tensor:
        """The step itself: shapes depend only on (size, width), and nothing reads a tensor back to the host."""
        model, slots = self.model, self.slots
        hidden = model.model.embed_tokens(token_ids)  # [size, 1, hidden]
        cos, sin = model.model.rotary_emb(hidden, positions[:, None])
        columns = torch.arange(width, device=hidden.device)
        # Each row sees its own columns up to and including the one this step writes.
        visible = (columns[None, :] <= positions[:, None]).view(size, 1, 1, width)
        rows = torch.arange(size, device=hidden.device)
        heads, kv_heads, head_dim = model.config.num_attention_heads, slots.kv_heads, slots.head_dim
        for index, layer in enumerate(self._layers):
            attention = layer.self_attn
            normed = layer.input_layernorm(hidden)
            query = attention.q_proj(normed).view(size, 1, heads, head_dim)
            key = attention.k_proj(normed).view(size, 1, kv_heads, head_dim)
            value = attention.v_proj(normed).view(size, 1, kv_heads, head_dim)
            if getattr(attention, "q_norm", None) is not None:  # Qwen 3
                query, key = attention.q_norm(query), attention.k_norm(key)
            query, key = self._rotate(query.transpose(1, 2), key.transpose(1, 2), cos, sin)
            keys, values = slots.keys[index][:size, :, :width], slots.values[index][:size, :, :width]
            keys[rows, :, positions] = key[:, :, 0]
            values[rows, :, positions] = value.transpose(1, 2)[:, :, 0]
            # The same attention function transformers' `sdpa` path calls (scores kept in float32, scaled inside).
            attended = F.scaled_dot_product_attention(query, keys, values, attn_mask=visible,
                                                      scale=attention.scaling, enable_gqa=kv_heads != heads)
            attended = attended.transpose(1, 2).reshape(size, 1, heads * head_dim)
            hidden = hidden + attention.o_proj(attended)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return model.lm_head(model.model.norm(hidden))[:, 0]

    def _replay(self, token_ids: torch.Tensor, positions: torch.Tensor, size: int, width: int) -> torch.Tensor:
        if self._recorded_for != self.slots.version:  # the buffers moved: the graphs write to the old ones
            self._recorded.clear()
            self._pool = None  # a pool whose graphs are all gone cannot take a new recording
            self._recorded_for = self.slots.version
        key = (size, width)
        if key in self.unrecordable:
            return self.forward(token_ids, positions, size, width)
        recorded = self._recorded.get(key)
        if recorded is None:
            device = self.slots.device
            stream = torch.cuda.current_stream(device) if device.type == "cuda" else None
            try:
                recorded = self._record(token_ids, positions, size, width)
            except Exception:  # noqa: BLE001 (an unrecordable step still decodes, eagerly)
                log.exception("recording a CUDA graph for %d rows of %d tokens failed; that shape decodes eagerly",
                              size, width)
                if stream is not None:
                    torch.cuda.set_stream(stream)  # a failed capture can leave its own stream current
                self.unrecordable.add(key)
                return self.forward(token_ids, positions, size, width)
            self._recorded[key] = recorded
        recorded.token_ids.copy_(token_ids)
        recorded.positions.copy_(positions)
        recorded.graph.replay()
        return recorded.logits

    def _record(self, token_ids: torch.Tensor, positions: torch.Tensor, size: int, width: int) -> _Recorded:
        """Warm up on a side stream (as CUDA graphs require), then record. Both write this step's keys and values,
        the same ones the replay that follows writes again."""
        static_ids, static_positions = token_ids.clone(), positions.clone()
        side = torch.cuda.Stream(device=self.slots.device)
        side.wait_stream(torch.cuda.current_stream(self.slots.device))
        with torch.cuda.stream(side):
            self.forward(static_ids, static_positions, size, width)
        torch.cuda.current_stream(self.slots.device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # thread_local: the API's threads may query the device (memory, resources) while the engine records.
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            logits = self.forward(static_ids, static_positions, size, width)
        log.info("recorded a CUDA graph for %d rows of up to %d tokens", size, width)
        return _Recorded(graph, static_ids, static_positions, logits)


class _Recorded:
    def __init__(self, graph: torch.cuda.CUDAGraph, token_ids: torch.Tensor, positions: torch.Tensor,
                 logits: torch.Tensor) -> None:
        self.graph = graph
        self.token_ids = token_ids
        self.positions = positions
        self.logits = logits
