"""Models beyond plain full attention: sliding-window layers (Mistral with a window, Gemma 2's alternating layers)
are served token for token like `model.generate`, also when requests join a running batch; models whose cache holds
recurrent or linear-attention state are refused up front with a clear error instead of failing mid-batch."""

from __future__ import annotations

import asyncio
import copy

import pytest
import torch
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    JambaConfig,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from engine.batch_cache import check_batchable
from engine.errors import UnsupportedModel
from engine.local import LocalEngine
from engine.requests import GenerationRequest, TokenEvent
from tests.engine.conftest import PREFIX_CACHE_BYTES, finish_of, greedy, reference_ids, run

WINDOW = 8
SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 512}


def windowed(tokenizer: PreTrainedTokenizerBase, family: str) -> PreTrainedModel:
    torch.manual_seed(99)
    ids = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id}
    if family == "mistral":
        return MistralForCausalLM(MistralConfig(sliding_window=WINDOW, **ids, **SHAPE)).eval()
    if family == "gemma3":  # five sliding-window layers to one full one, by default; two of each here
        config = Gemma3TextConfig(sliding_window=WINDOW, **ids, **{**SHAPE, "num_hidden_layers": 4},
                                  layer_types=["sliding_attention", "full_attention"] * 2)
        return Gemma3ForCausalLM(config).eval()
    # Gemma 2 alternates sliding-window and full layers.
    return Gemma2ForCausalLM(Gemma2Config(sliding_window=WINDOW, **ids, **SHAPE)).eval()


@pytest.mark.parametrize("family", ["mistral", "gemma2", "gemma3"])
async def test_sliding_window_models_equal_model_generate_when_requests_join_mid_batch(
    family: str, tokenizer: PreTrainedTokenizerBase
) -> None:
    model = windowed(tokenizer, family)
    prompts = [tokenizer.encode("the quick brown fox jumps over the lazy dog " * repeat) for repeat in (1, 3, 5)]
    engine = LocalEngine(model, tokenizer, max_context=512, prefix_cache_bytes=PREFIX_CACHE_BYTES)
    try:
        first = engine.generate(GenerationRequest(prompt_ids=prompts[0], sampling=greedy(40, ignore_eos=True)))
        events = [event async for event in _until_first_token(first)]
        # These two join the running batch: their rows are merged into the first one's cache.
        joined = await asyncio.gather(*(run(engine, prompt_ids=prompt, sampling=greedy(40, ignore_eos=True))
                                        for prompt in prompts[1:]))
        events += [event async for event in first]
        outputs = [list(finish_of(result).output_ids) for result in [events, *joined]]
    finally:
        engine.close()
    for prompt, output in zip(prompts, outputs, strict=True):
        assert output == reference_ids(model, prompt, 40)
    # The window really shaped those answers: without it the same weights answer differently.
    unwindowed = copy.deepcopy(model)
    unwindowed.config.sliding_window = 4096
    assert any(reference_ids(unwindowed, prompt, 40) != output for prompt, output in zip(prompts, outputs,
                                                                                          strict=True))


async def _until_first_token(stream):  # type: ignore[no-untyped-def]
    async for event in stream:
        yield event
        if isinstance(event, TokenEvent):
            return


def test_models_with_recurrent_state_are_refused_before_serving(tokenizer: PreTrainedTokenizerBase) -> None:
    hybrid = JambaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    with pytest.raises(UnsupportedModel) as refused:
        check_batchable(hybrid)
    assert "cannot batch" in refused.value.message and refused.value.code == "unsupported_model"
