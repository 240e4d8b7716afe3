"""The bundled demo model (SmolLM2-135M-Instruct, from its GGUF) through the engine."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from engine.local import LocalEngine
from engine.requests import SamplingParams, TokenEvent
from tests.engine.conftest import finish_of, greedy, reference_ids, run, text_of


async def test_it_knows_the_capital_of_france(demo_engine: LocalEngine) -> None:
    events = await run(demo_engine, messages=[{"role": "user", "content": "What is the capital of France?"}],
                       sampling=greedy(30))
    assert "Paris" in text_of(events)
    assert finish_of(events).finish_reason == "stop"


async def test_greedy_equals_model_generate_alone_and_in_a_batch_of_16(
    demo_engine: LocalEngine, demo_model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase
) -> None:
    questions = [f"Name {count} animals that live in {place}." for count in (2, 3, 4, 5)
                 for place in ("Africa", "the sea", "forests", "cities")]
    prompts = [demo_engine.encode_messages([{"role": "user", "content": q}]) for q in questions]
    alone = await run(demo_engine, prompt_ids=prompts[0], sampling=greedy(16))
    assert list(finish_of(alone).output_ids) == reference_ids(demo_model, prompts[0], 16)

    mixed = [greedy(16) if i % 2 == 0 else SamplingParams(temperature=0.8, seed=i, max_tokens=24)
             for i in range(16)]
    results = await asyncio.gather(*(run(demo_engine, prompt_ids=p, sampling=s)
                                     for p, s in zip(prompts, mixed, strict=True)))
    for i in range(0, 16, 2):
        assert list(finish_of(results[i]).output_ids) == reference_ids(demo_model, prompts[i], 16), questions[i]


UNICODE_PROMPTS = ["🌍🚀🌍🚀🌍🚀🌍🚀", "你好世界。你好世界。你好世界。", "Emoji list: 😀 😃 😄 😁 😆 😅"]


@pytest.mark.parametrize("prompt", UNICODE_PROMPTS)
async def test_emoji_and_cjk_stream_without_replacement_characters(
    demo_engine: LocalEngine, tokenizer: PreTrainedTokenizerBase, prompt: str
) -> None:
    events = await run(demo_engine, prompt=prompt, sampling=greedy(24))
    pieces = [event.text for event in events if isinstance(event, TokenEvent)]
    output_ids = list(finish_of(events).output_ids)
    # The answer really splits characters across tokens (a token alone decodes to U+FFFD)...
    assert any("\ufffd" in tokenizer.decode([token]) for token in output_ids)
    assert any(not piece.isascii() for piece in pieces)
    # ...yet no streamed piece holds a replacement character, and together they are the full decode.
    assert not any("\ufffd" in piece for piece in pieces)
    assert "".join(pieces) == tokenizer.decode(output_ids, skip_special_tokens=True)
