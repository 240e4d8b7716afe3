"""What tests of the local engine share beyond tests/engine/conftest.py's runs: prompts that pad a batch
differently, and waiting for the worker to drop every row."""

from __future__ import annotations

import asyncio
import random

from transformers import PreTrainedTokenizerBase

from engine.local import LocalEngine


async def wait_for_empty_batch(engine: LocalEngine) -> None:
    """The worker dropped every row: the slots are really free (not just the streams ended)."""
    for _ in range(500):
        if engine.stats().batch_size == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"rows still in the batch: {engine.stats()}")


def prompts(tokenizer: PreTrainedTokenizerBase, count: int) -> list[list[int]]:
    """Prompts of different lengths, so rows in a batch are padded differently."""
    words = "the quick brown fox jumps over a lazy dog while seven small birds sing".split()
    rng = random.Random(7)
    return [tokenizer.encode(" ".join(rng.choices(words, k=3 + 5 * (i % 7)))) for i in range(count)]
