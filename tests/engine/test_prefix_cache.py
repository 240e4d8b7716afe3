"""Prefix caching: a prompt that starts like an earlier prompt (or an earlier prompt plus its answer) reuses that
part's keys and values, and the output is still exactly plain `model.generate`'s."""

from __future__ import annotations

import asyncio

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from engine.local import LocalEngine
from engine.prefix_cache import PrefixCache
from tests.engine.conftest import finish_of, greedy, reference_ids, run

SYSTEM = [{"role": "system", "content": "You are a careful assistant who answers in one short sentence."}]


def chat(engine: LocalEngine, *turns: tuple[str, str]) -> list[int]:
    return engine.encode_messages(SYSTEM + [{"role": role, "content": text} for role, text in turns])


async def test_a_repeated_prompt_reuses_all_but_its_last_token(tiny_engine: LocalEngine,
                                                               tiny_model: LlamaForCausalLM) -> None:
    prompt = chat(tiny_engine, ("user", "Name three rivers in Europe."))
    first = finish_of(await run(tiny_engine, prompt_ids=prompt, sampling=greedy(20)))
    before = tiny_engine.stats().prefix_cached_tokens
    again = finish_of(await run(tiny_engine, prompt_ids=prompt, sampling=greedy(20)))
    assert tiny_engine.stats().prefix_cached_tokens - before == len(prompt) - 1
    assert list(again.output_ids) == list(first.output_ids) == reference_ids(tiny_model, prompt, 20)
    assert again.usage.prompt_tokens == len(prompt)  # reuse changes no one's bill


async def test_a_shared_system_prompt_is_reused_and_the_rest_computed(tiny_engine: LocalEngine,
                                                                     tiny_model: LlamaForCausalLM) -> None:
    seed = chat(tiny_engine, ("user", "What is rain?"))
    await run(tiny_engine, prompt_ids=seed, sampling=greedy(5))
    other = chat(tiny_engine, ("user", "Describe a lighthouse at dawn in some detail."))
    shared = next(i for i, (a, b) in enumerate(zip(seed, other, strict=False)) if a != b)
    before = tiny_engine.stats().prefix_cached_tokens
    events = await run(tiny_engine, prompt_ids=other, sampling=greedy(24))
    assert tiny_engine.stats().prefix_cached_tokens - before == shared
    assert list(finish_of(events).output_ids) == reference_ids(tiny_model, other, 24)


async def test_the_next_turn_of_a_chat_reuses_the_previous_answer(tiny_engine: LocalEngine,
                                                                  tiny_model: LlamaForCausalLM,
                                                                  tokenizer: PreTrainedTokenizerBase) -> None:
    first = chat(tiny_engine, ("user", "Tell me about bees."))
    answer = finish_of(await run(tiny_engine, prompt_ids=first, sampling=greedy(16, ignore_eos=True)))
    # The client sends the answer back as the start of the next prompt, token for token.
    second = first + list(answer.output_ids) + tokenizer.encode("<|im_end|>\n<|im_start|>user\nAnd wasps?")
    before = tiny_engine.stats().prefix_cached_tokens
    events = await run(tiny_engine, prompt_ids=second, sampling=greedy(16))
    # Everything but the answer's last token, which was sampled but never fed to the model.
    assert tiny_engine.stats().prefix_cached_tokens - before == len(first) + len(answer.output_ids) - 1
    assert list(finish_of(events).output_ids) == reference_ids(tiny_model, second, 16)


async def test_cached_and_fresh_prompts_share_a_batch_and_match_generate(tiny_engine: LocalEngine,
                                                                         tiny_model: LlamaForCausalLM) -> None:
    topics = ["the sea", "bread", "winter", "trains", "bees", "clocks", "a market", "rivers"]
    warm = [chat(tiny_engine, ("user", f"A line about {topic}.")) for topic in topics[:4]]
    await asyncio.gather(*(run(tiny_engine, prompt_ids=p, sampling=greedy(4)) for p in warm))
    batch = warm + [chat(tiny_engine, ("user", f"A line about {topic}.")) for topic in topics[4:]]
    results = await asyncio.gather(*(run(tiny_engine, prompt_ids=p, sampling=greedy(18, ignore_eos=True))
                                     for p in batch))
    for prompt, events in zip(batch, results, strict=True):
        assert list(finish_of(events).output_ids) == reference_ids(tiny_model, prompt, 18)


async def test_without_a_prefix_cache_nothing_is_reused(tiny_model: LlamaForCausalLM,
                                                        tokenizer: PreTrainedTokenizerBase) -> None:
    engine = LocalEngine(tiny_model, tokenizer, max_context=512, prefix_cache_bytes=0)
    try:
        prompt = chat(engine, ("user", "Hello there."))
        for _ in range(2):
            await run(engine, prompt_ids=prompt, sampling=greedy(4))
        assert engine.stats().prefix_cached_tokens == 0 and engine.stats().prefix_cache_bytes == 0
    finally:
        engine.close()


def layers_of(tokens: int, width: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.zeros(1, 1, tokens, width), torch.zeros(1, 1, tokens, width))]


def test_the_cache_stays_within_its_bytes_dropping_the_least_recently_used() -> None:
    per_token = 2 * 4 * 4  # keys and values, 4 floats each
    cache = PrefixCache(capacity_bytes=25 * per_token)
    cache.store([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], layers_of(10))
    cache.store([20, 21, 22, 23, 24, 25, 26, 27, 28, 29], layers_of(10))
    assert cache.lookup([1, 2, 3, 99]) is not None  # touched: now the most recently used
    cache.store([40, 41, 42, 43, 44, 45, 46, 47, 48, 49], layers_of(10))
    assert cache.nbytes <= 25 * per_token
    assert cache.lookup([20, 21, 22, 99]) is None  # the least recently used went
    hit = cache.lookup([1, 2, 3, 99])
    assert hit is not None and hit.length == 3 and hit.layers()[0][0].shape[-2] == 3


def test_a_run_that_extends_another_replaces_it() -> None:
    cache = PrefixCache(capacity_bytes=1 << 20)
    cache.store([1, 2, 3], layers_of(3))
    cache.store([1, 2, 3, 4, 5], layers_of(5))
    assert cache.nbytes == sum(k.nbytes + v.nbytes for k, v in layers_of(5))
    cache.store([1, 2], layers_of(2))  # already covered: nothing added
    assert cache.nbytes == sum(k.nbytes + v.nbytes for k, v in layers_of(5))
    hit = cache.lookup([1, 2, 3, 4, 5])
    assert hit is not None and hit.length == 4  # the last token is always left to compute
