"""Real models for the engine's tests: the demo model (fetched by `make test`), and a tiny random Llama that
shares its tokenizer, seeded so its greedy output is the same on every run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM, PreTrainedTokenizerBase

from engine.interface import DecodeMode
from engine.local import LocalEngine
from engine.requests import EngineEvent, FinishEvent, GenerationRequest, SamplingParams, TokenEvent

PREFIX_CACHE_BYTES = 64 * 1024 * 1024  # on, as in production, so every correctness test also runs through it
# Tests and parameters that need an NVIDIA GPU: run there, reported as skipped elsewhere.
ON_GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")]


@pytest.fixture(scope="session")
def demo_model(demo_folder: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(demo_folder, dtype=torch.float32).eval()


@pytest.fixture
async def tiny_engine(tiny_model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase) -> AsyncIterator[LocalEngine]:
    engine = tiny_engine_on(tiny_model, tokenizer)
    yield engine
    engine.close()


def tiny_engine_on(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                   decode: DecodeMode = "auto") -> LocalEngine:
    return LocalEngine(model, tokenizer, max_context=512, max_batch_size=32, max_queue=128,
                       prefix_cache_bytes=PREFIX_CACHE_BYTES, decode=decode)


@pytest.fixture(scope="session", params=["transformers", "static"])
def demo_engine(request: pytest.FixtureRequest, demo_model: torch.nn.Module,
                tokenizer: PreTrainedTokenizerBase) -> Iterator[LocalEngine]:
    """The demo model behind each decode path the CPU can take (engine/static_decode.py)."""
    engine = LocalEngine(demo_model, tokenizer, max_context=2048, max_batch_size=16,
                         prefix_cache_bytes=PREFIX_CACHE_BYTES, decode=request.param)
    yield engine
    engine.close()


async def run(engine: LocalEngine, **request: object) -> list[EngineEvent]:
    async with asyncio.timeout(120):  # a stream that never finishes is a failure, not a hang
        return [event async for event in engine.generate(GenerationRequest(**request))]  # type: ignore[arg-type]


def greedy(max_tokens: int = 24, **extra: object) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=max_tokens, **extra)  # type: ignore[arg-type]


def text_of(events: list[EngineEvent], index: int = 0) -> str:
    return "".join(e.text for e in events if isinstance(e, TokenEvent) and e.index == index)


def finish_of(events: list[EngineEvent], index: int = 0) -> FinishEvent:
    return next(e for e in events if isinstance(e, FinishEvent) and e.index == index)


def reference_ids(model: torch.nn.Module, prompt_ids: list[int], max_tokens: int) -> list[int]:
    """Greedy output of plain `model.generate`, the reference the engine must match token for token."""
    with torch.inference_mode():
        output = model.generate(torch.tensor([prompt_ids], device=model.device),
                                attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long, device=model.device),
                                max_new_tokens=max_tokens, do_sample=False)
    return output[0, len(prompt_ids):].tolist()
