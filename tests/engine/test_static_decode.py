"""The static decode step (engine/static_decode.py): which models take it, and its CUDA-graph bookkeeping.

Its arithmetic is checked where it runs by default on a GPU: test_local_engine.py and test_demo_model.py run their
token-for-token checks through it on the CPU too. CUDA graphs exist only on a GPU, so here a stand-in records a
step as a closure over the same static inputs and output, replayed eagerly: what the bookkeeping must get right
(padding rows to a bucket, one recording per bucket and width, dropping recordings when the buffers grow, copying
each step's inputs into the recorded ones, reading the recorded output) is exercised as on a GPU.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from engine.local import LocalEngine
from engine.static_decode import StaticDecoder, _Recorded, choose_decode
from tests.engine.conftest import PREFIX_CACHE_BYTES, finish_of, greedy, reference_ids, run


class EagerReplay:
    """Stands in for `torch.cuda.CUDAGraph`: replaying runs the recorded closure."""

    def __init__(self, step: Callable[[], None]) -> None:
        self.step = step
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1
        self.step()


def record_eagerly(self: StaticDecoder, token_ids: torch.Tensor, positions: torch.Tensor, size: int,
                   width: int) -> _Recorded:
    static_ids, static_positions = token_ids.clone(), positions.clone()
    logits = self.forward(static_ids, static_positions, size, width).clone()  # the warm-up, as on a GPU
    # A graph keeps the addresses it was recorded with: a replay works on these buffers even after they are replaced.
    buffers = (self.slots.keys, self.slots.values)

    def step() -> None:
        current = (self.slots.keys, self.slots.values)
        self.slots.keys, self.slots.values = buffers
        try:
            logits.copy_(self.forward(static_ids, static_positions, size, width))
        finally:
            self.slots.keys, self.slots.values = current

    return _Recorded(EagerReplay(step), static_ids, static_positions, logits)  # type: ignore[arg-type]


def graphed_engine(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> LocalEngine:
    engine = LocalEngine(model, tokenizer, max_context=512, prefix_cache_bytes=PREFIX_CACHE_BYTES, decode="static")
    assert engine.scheduler._static is not None
    engine.scheduler._static.graphs = True  # what decode="graphs" gives on a GPU
    return engine


def test_auto_takes_graphs_only_on_a_gpu_and_only_for_llama_shaped_models(
    tiny_model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase
) -> None:
    assert choose_decode("auto", tiny_model) == "transformers"  # on the CPU the matrix products dominate anyway
    assert choose_decode("static", tiny_model) == "static"
    assert choose_decode("graphs", tiny_model) == "static"  # no GPU: the same step, unrecorded
    windowed = MistralForCausalLM(MistralConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                                num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                                sliding_window=8))
    assert choose_decode("static", windowed) == "transformers"


async def test_replayed_steps_equal_model_generate_while_rows_join_leave_and_outgrow_the_buffers(
    tiny_model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(StaticDecoder, "_record", record_eagerly)
    engine = graphed_engine(tiny_model, tokenizer)
    prompts = [tokenizer.encode(text) for text in ("a long answer follows", "short", "the middle one", "late")]
    lengths = [200, 6, 40, 30]  # the first outgrows the initial 128 columns: the buffers grow, recordings go
    try:
        async def later(index: int) -> list[int]:
            await asyncio.sleep(0.05 * index)  # arrivals spread out: rows join a running batch
            events = await run(engine, prompt_ids=prompts[index], sampling=greedy(lengths[index], ignore_eos=True))
            return list(finish_of(events).output_ids)

        outputs = await asyncio.gather(*(later(index) for index in range(4)))
        static = engine.scheduler._static
        assert static is not None and static.graphs
        recorded = dict(static._recorded)
    finally:
        engine.close()
    for prompt, length, output in zip(prompts, lengths, outputs, strict=True):
        assert output == reference_ids(tiny_model, prompt, length)
    # What is left recorded is for the widened buffers; the first answer ran alone at the end.
    assert (1, 256) in recorded and all(width in (128, 256) for _, width in recorded)
    assert all(size in (1, 2, 4) for size, _ in recorded)
    assert sum(entry.graph.replays for entry in recorded.values()) > 0  # type: ignore[attr-defined]


async def test_a_step_that_cannot_be_recorded_decodes_eagerly(
    tiny_model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object) -> _Recorded:
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(StaticDecoder, "_record", refuse)
    engine = graphed_engine(tiny_model, tokenizer)
    prompt = tokenizer.encode("the quick brown fox")
    try:
        events = await run(engine, prompt_ids=prompt, sampling=greedy(20, ignore_eos=True))
        static = engine.scheduler._static
        assert static is not None and static.unrecordable == {(1, 128)} and not static._recorded
    finally:
        engine.close()
    assert list(finish_of(events).output_ids) == reference_ids(tiny_model, prompt, 20)


async def test_one_long_answer_does_not_keep_the_buffers_wide(tiny_model: LlamaForCausalLM,
                                                                tokenizer: PreTrainedTokenizerBase) -> None:
    engine = LocalEngine(tiny_model, tokenizer, max_context=512, decode="static")
    slots = engine.scheduler._slots
    assert slots is not None
    prompt = tokenizer.encode("a long answer follows")
    try:
        long_one = await run(engine, prompt_ids=prompt, sampling=greedy(400, ignore_eos=True))
        for _ in range(200):  # the worker drops the finished row, and narrows, right after its last event
            if slots.rows == 0 and slots.width == 128 and slots.values[-1].shape[2] == 128:
                break
            await asyncio.sleep(0.01)
        assert (slots.rows, slots.width, slots.values[-1].shape[2]) == (0, 128, 128)
        short = await run(engine, prompt_ids=prompt, sampling=greedy(20, ignore_eos=True))
    finally:
        engine.close()
    assert list(finish_of(long_one).output_ids) == reference_ids(tiny_model, prompt, 400)
    assert list(finish_of(short).output_ids) == reference_ids(tiny_model, prompt, 20)


def other_family(tokenizer: PreTrainedTokenizerBase, family: str) -> PreTrainedModel:
    torch.manual_seed(7)
    shape = {"vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512}
    if family == "qwen2":  # biases on the q/k/v projections
        return Qwen2ForCausalLM(Qwen2Config(**shape)).eval()
    if family == "qwen3":  # per-head norms of queries and keys
        return Qwen3ForCausalLM(Qwen3Config(head_dim=16, **shape)).eval()
    scaled = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 128}  # Llama 3's long-context rotary scaling
    return LlamaForCausalLM(LlamaConfig(rope_scaling=scaled, **shape)).eval()


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "llama3-rope"])
async def test_the_static_step_equals_model_generate_for_other_llama_shaped_families(
    family: str, tokenizer: PreTrainedTokenizerBase
) -> None:
    model = other_family(tokenizer, family)
    engine = LocalEngine(model, tokenizer, max_context=512, decode="static")
    prompts = [tokenizer.encode(text) for text in ("one prompt", "another, longer prompt than that one", "third")]
    try:
        assert engine.scheduler.decode == "static"
        results = await asyncio.gather(*(run(engine, prompt_ids=prompt, sampling=greedy(30, ignore_eos=True))
                                         for prompt in prompts))
    finally:
        engine.close()
    for prompt, events in zip(prompts, results, strict=True):
        assert list(finish_of(events).output_ids) == reference_ids(model, prompt, 30)
