"""A request that fails inside the engine mid-batch: its failure is its own, the batch around it goes on."""

from __future__ import annotations

import asyncio

from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from engine.local import LocalEngine
from engine.requests import ErrorEvent, FinishEvent, SamplingParams
from tests.engine.conftest import finish_of, greedy, reference_ids, run
from tests.support.engine import prompts, wait_for_empty_batch

# Valid (greater than 0, finite), but dividing the logits by it overflows to inf: sampling then meets NaN
# probabilities and torch.multinomial raises inside the engine's worker thread, for this row only.
OVERFLOWING_PENALTY = SamplingParams(temperature=1.0, repetition_penalty=1e-45, max_tokens=40, seed=3)


async def test_one_request_failing_mid_batch_leaves_the_others_whole(
    tiny_engine: LocalEngine, tiny_model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase
) -> None:
    batch = prompts(tokenizer, 5)
    greedy_ones = [asyncio.create_task(run(tiny_engine, prompt_ids=prompt, sampling=greedy(30, ignore_eos=True)))
                   for prompt in batch[:4]]
    # The failing request joins while the others run, so it fails in a decode step they share.
    while tiny_engine.stats().running < 4:  # noqa: ASYNC110 (the engine thread admits them)
        await asyncio.sleep(0.005)
    failing = await run(tiny_engine, prompt_ids=batch[4], sampling=OVERFLOWING_PENALTY)
    finished = await asyncio.gather(*greedy_ones)

    assert isinstance(failing[-1], ErrorEvent) and failing[-1].code == "generation_failed", failing[-1]
    assert not any(isinstance(event, FinishEvent) for event in failing)
    for prompt, events in zip(batch[:4], finished, strict=True):
        assert not any(isinstance(event, ErrorEvent) for event in events)
        assert finish_of(events).finish_reason == "length"
        assert list(finish_of(events).output_ids) == reference_ids(tiny_model, prompt, 30)
    await wait_for_empty_batch(tiny_engine)
    # The engine serves the next request normally.
    after = await run(tiny_engine, prompt_ids=batch[0], sampling=greedy(8))
    assert list(finish_of(after).output_ids) == reference_ids(tiny_model, batch[0], 8)
