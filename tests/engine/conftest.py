"""Real models for the engine's tests: the demo model (fetched by `make test`), and a tiny random Llama that
shares its tokenizer, seeded so its greedy output is the same on every run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from engine.demo_model import demo_model_path
from engine.loader import converted_folder
from engine.local import LocalEngine
from engine.requests import EngineEvent, FinishEvent, GenerationRequest, SamplingParams, TokenEvent

REPO = Path(__file__).resolve().parents[2]
# Shared with `make run` (default data dir): the GGUF is converted once per machine, not once per test run.
CONVERSION_CACHE = REPO / "var" / "cache" / "converted"


@pytest.fixture(scope="session")
def demo_folder() -> Path:
    gguf = demo_model_path(REPO / "models")
    if not gguf.is_file():
        pytest.fail(f"the demo model is missing at {gguf}: run `make demo-model` (make test does it)")
    return converted_folder(gguf, CONVERSION_CACHE)


@pytest.fixture(scope="session")
def tokenizer(demo_folder: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(demo_folder)


@pytest.fixture(scope="session")
def tiny_model(tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    torch.manual_seed(1234)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def demo_model(demo_folder: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(demo_folder, dtype=torch.float32).eval()


@pytest.fixture
async def tiny_engine(tiny_model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase) -> AsyncIterator[LocalEngine]:
    engine = LocalEngine(tiny_model, tokenizer, max_context=512, max_batch_size=32, max_queue=128)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def demo_engine(demo_model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> Iterator[LocalEngine]:
    engine = LocalEngine(demo_model, tokenizer, max_context=2048, max_batch_size=16)
    yield engine
    engine.close()


async def run(engine: LocalEngine, **request: object) -> list[EngineEvent]:
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
        output = model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids),
                                dtype=torch.long), max_new_tokens=max_tokens, do_sample=False)
    return output[0, len(prompt_ids):].tolist()
