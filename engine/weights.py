"""The format a model's weights take on the CPU: float32, bfloat16, or weight-only int8 / int4.

A decode step on a CPU reads every weight once, so its speed is about bytes: float32 reads 4 a weight, bfloat16 2,
int8 1 (plus a scale a row), int4 half (plus a scale and a zero point per group of 32). Only the weights shrink:
int8 and int4 keep float32 activations, so a format never quantizes what the model computes (dynamic int8
activations measured +180% perplexity on the demo model).
The quantized products are torch's own CPU kernels (`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`).

What each format costs in quality is measured, not assumed: tests/engine/test_weight_formats.py holds every format
to a perplexity bar against float32 on the demo model.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from engine.interface import CpuWeights, WeightFormat

log = logging.getLogger(__name__)

INT4_GROUP = 32  # weights per scale and zero point: 32 keeps the demo model's perplexity within 2% of float32


def resolve(requested: CpuWeights) -> WeightFormat:
    """``auto``: float32 for now. bfloat16 is faster where the CPU has it natively but fails the token-for-token
    bar (compute_dtype); which of int8 and int4 is faster on the engine's step is still to be measured
    (bench/engine_throughput.py), and ``auto`` takes it once it is."""
    return "float32" if requested == "auto" else requested


def compute_dtype(weights: WeightFormat) -> torch.dtype:
    """The dtype activations, norms, embeddings and the KV cache take beside these weights: bfloat16 only for
    bfloat16 weights. The int8 and int4 kernels give each output row the same bits whatever else is in the batch
    (measured), in float32 as in bfloat16; bfloat16 attention and LM head do not, and greedy output then drifts
    from `model.generate`'s at near-ties, so int8 and int4 keep float32 around them."""
    return torch.bfloat16 if weights == "bfloat16" else torch.float32


class PackedLinear(nn.Module):
    """A linear layer whose weight is kept packed for one of torch's weight-only CPU kernels (``product``)."""

    in_features: int
    out_features: int
    bias: nn.Parameter | None

    def product(self, flat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.product(x.reshape(-1, self.in_features))
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


class Int8Linear(PackedLinear):
    """A linear layer whose weight is int8 with one scale per output row (symmetric, absmax / 127)."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scales = (weight.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
        quantized = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("qweight", quantized)
        self.register_buffer("scales", scales.to(dtype))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(dtype), requires_grad=False)

    def product(self, flat: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(flat, self.qweight, self.scales)


class Int4Linear(PackedLinear):
    """A linear layer whose weight is 4-bit, asymmetric, with a scale and a zero point per group of input columns,
    packed in the layout torch's CPU int4 kernel reads."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype, group: int = INT4_GROUP) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        rows, columns = weight.shape
        grouped = weight.reshape(rows, columns // group, group)
        low, high = grouped.amin(dim=-1), grouped.amax(dim=-1)
        scales = ((high - low) / 15).clamp(min=torch.finfo(torch.float32).tiny)
        levels = torch.round((grouped - low[..., None]) / scales[..., None]).clamp(0, 15).to(torch.int32)
        # The kernel computes (level - 8) × scale + zero, so the zero it wants is low + 8 × scale.
        scales_and_zeros = torch.stack([scales, low + 8 * scales], dim=-1).transpose(0, 1).contiguous()
        self.in_features, self.out_features, self.group = columns, rows, group
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            levels.reshape(rows, columns), 1))
        self.register_buffer("scales_and_zeros", scales_and_zeros.to(dtype))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(dtype), requires_grad=False)

    def product(self, flat: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, self.group, self.scales_and_zeros)


def apply_cpu_weights(model: nn.Module, weights: WeightFormat) -> nn.Module:
    """Put a float model's weights in this format, in place: every linear layer of the decoder and the LM head
    for int8 and int4 (the embedding table stays in the compute dtype: it is read a row a token, not whole)."""
    dtype = compute_dtype(weights)
    # Rotary frequencies stay in float32, as transformers loads them in any dtype: in bfloat16 they would shift
    # every position's angle.
    frequencies = {name: buffer for name, buffer in model.named_buffers() if name.endswith("inv_freq")}
    model.to(dtype)
    for name, buffer in frequencies.items():
        owner, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(owner), attribute, buffer)
    if weights in ("float32", "bfloat16"):
        return model
    kept = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            if weights == "int8" or child is model.get_output_embeddings():
                # The LM head stays 8-bit in int4 too (as llama.cpp keeps its output tensor at 6 or 8 bits): at 4
                # bits it alone cost the demo model 10% perplexity.
                setattr(parent, name, Int8Linear(child, dtype))
            elif child.in_features % INT4_GROUP == 0:
                setattr(parent, name, Int4Linear(child, dtype))
            else:
                kept += 1
    if kept:
        log.info("%d linear layers kept in %s (their width is not a multiple of %d)", kept, dtype, INT4_GROUP)
    # A tied LM head shared the embedding's Parameter; the embedding keeps it, the head now has its own copy.
    if getattr(model.config, "tie_word_embeddings", False):
        model.config.tie_word_embeddings = False
    return model


def weight_bytes(model: nn.Module) -> int:
    """What the model's weights take in memory, in their format (quantized buffers included)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total
