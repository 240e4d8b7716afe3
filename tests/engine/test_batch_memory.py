"""The batch's KV memory is capped: requests that together need several times the budget wait their turn and all
finish exactly as `model.generate` would, the measured peak stays within the budget, and a long prompt's prefill
is fed in chunks so running requests keep getting a decode step between them."""

from __future__ import annotations

import asyncio

import pytest
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from engine.errors import RequestTooLarge
from engine.local import LocalEngine
from engine.memory import kv_bytes_per_token
from engine.requests import GenerationRequest, TokenEvent
from tests.engine.conftest import PREFIX_CACHE_BYTES, finish_of, greedy, reference_ids, run

# 127 columns at most: within the static step's smallest (128-wide) buffers. Decode steps are what costs (a
# prompt is fed in chunks of columns), so the answers are short: each wave of admitted rows takes NEW steps.
PROMPT, NEW = 96, 32


def long_prompts(tokenizer: PreTrainedTokenizerBase, count: int, length: int) -> list[list[int]]:
    words = "rivers cross old towns where bridges of stone carry carts and people over water".split()
    return [tokenizer.encode(" ".join(words[i % 5:] + words * 20))[:length] for i in range(count)]


@pytest.mark.parametrize("decode", ["transformers", "static"])
async def test_requests_needing_three_times_the_budget_all_finish_like_generate_within_it(
    decode: str, tiny_model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase
) -> None:
    prompts = long_prompts(tokenizer, 9, PROMPT)
    choices = [1] * 8 + [4]  # the last one's four choices are admitted together or not at all
    per_token = kv_bytes_per_token(tiny_model.config, tiny_model.dtype)
    need = sum(n * (PROMPT + NEW) * per_token for n in choices)
    budget = need // 3
    engine = LocalEngine(tiny_model, tokenizer, max_context=512, prefix_cache_bytes=PREFIX_CACHE_BYTES,
                         decode=decode, kv_budget_bytes=budget, prefill_chunk_tokens=32)  # type: ignore[arg-type]
    try:
        results = await asyncio.gather(*(run(engine, prompt_ids=prompt, sampling=greedy(NEW, n=n))
                                         for prompt, n in zip(prompts, choices, strict=True)))
        stats = engine.stats()
    finally:
        engine.close()
    assert need >= 3 * budget and stats.kv_budget_bytes == budget
    assert 0 < stats.peak_kv_cache_bytes <= budget
    references: dict[tuple[int, ...], list[int]] = {}  # a prompt repeats (long_prompts cycles its start)
    for prompt, n, events in zip(prompts, choices, results, strict=True):
        if tuple(prompt) not in references:
            references[tuple(prompt)] = reference_ids(tiny_model, prompt, NEW)
        expected = references[tuple(prompt)]
        assert [list(finish_of(events, index).output_ids) for index in range(n)] == [expected] * n


@pytest.mark.parametrize("decode", ["transformers", "static"])
async def test_a_running_request_gets_a_step_after_every_chunk_of_a_long_prefill(
    decode: str, tiny_model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase
) -> None:
    chunk = 8
    engine = LocalEngine(tiny_model, tokenizer, max_context=512, decode=decode,  # type: ignore[arg-type]
                         prefill_chunk_tokens=chunk)
    long_prompt = long_prompts(tokenizer, 1, 200)[0]
    received: list[int] = []
    first_token = asyncio.Event()

    async def keep_running(request: GenerationRequest) -> None:
        async for event in engine.generate(request):
            if isinstance(event, TokenEvent):
                received.extend(event.token_ids)
                first_token.set()

    running = GenerationRequest(prompt_ids=tokenizer.encode("a short one"), sampling=greedy(480, ignore_eos=True))
    task = asyncio.create_task(keep_running(running))
    try:
        await first_token.wait()
        gained: list[int] = []
        output: list[int] = []
        async for event in engine.generate(GenerationRequest(prompt_ids=long_prompt, sampling=greedy(12))):
            if not gained:
                gained.append(len(received))  # the StartEvent: submitted
            elif isinstance(event, TokenEvent) and len(gained) == 1:
                gained.append(len(received))
            output.extend(getattr(event, "token_ids", ()))
        engine.abort(running.request_id)
        await task
    finally:
        engine.close()
    chunks = -(-len(long_prompt) // chunk)
    assert gained[1] - gained[0] >= chunks - 2, f"{gained[1] - gained[0]} steps during {chunks} chunks"
    assert output == reference_ids(tiny_model, long_prompt, 12)


async def test_a_request_that_cannot_fit_alone_is_refused_before_any_work(
    tiny_model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase
) -> None:
    per_token = kv_bytes_per_token(tiny_model.config, tiny_model.dtype)
    engine = LocalEngine(tiny_model, tokenizer, max_context=512, kv_budget_bytes=300 * per_token)
    try:
        assert engine.max_context == 300
        steps = engine.stats().steps
        with pytest.raises(RequestTooLarge) as refused:
            await run(engine, prompt_ids=long_prompts(tokenizer, 1, 100)[0], sampling=greedy(100, n=4))
        assert refused.value.param == "n" and engine.stats().steps == steps
        alone = await run(engine, prompt_ids=long_prompts(tokenizer, 1, 100)[0], sampling=greedy(100))
        assert len(finish_of(alone).output_ids) > 0
    finally:
        engine.close()
