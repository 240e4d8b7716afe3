"""The models every layer's tests use: the demo model (fetched by `make test`), its tokenizer, and tiny seeded
Llamas that share that tokenizer.

Kept apart from the database and API fixtures, with nothing but torch and transformers behind it, so the engine's
GPU tests can run on a device machine that has neither the database drivers nor the web stack (docs/engine.md,
"On a GPU"): there, `LLMWS_TEST_TOKENIZER_DIR` names the demo tokenizer the GPU kit carried, since the model itself
is too large to carry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from engine.demo_model import demo_model_path
from engine.loader import converted_folder

REPO = Path(__file__).resolve().parents[1]
# Shared with `make run` (default data dir): the GGUF is converted once per machine, not once per test run.
CONVERSION_CACHE = REPO / "var" / "cache" / "converted"
TOKENIZER_ENV = "LLMWS_TEST_TOKENIZER_DIR"


@pytest.fixture(scope="session")
def demo_folder() -> Path:
    gguf = demo_model_path(REPO / "models")
    if not gguf.is_file():
        pytest.fail(f"the demo model is missing at {gguf}: run `make demo-model` (make test does it)")
    return converted_folder(gguf, CONVERSION_CACHE)


@pytest.fixture(scope="session")
def tokenizer(request: pytest.FixtureRequest) -> PreTrainedTokenizerBase:
    carried = os.environ.get(TOKENIZER_ENV)
    return AutoTokenizer.from_pretrained(carried or request.getfixturevalue("demo_folder"))


def tiny_llama(tokenizer: PreTrainedTokenizerBase, *, seed: int, context: int) -> LlamaForCausalLM:
    """Two layers of width 64 on the demo tokenizer, seeded: the same greedy output on every run."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_model(tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    return tiny_llama(tokenizer, seed=1234, context=512)


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase,
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model saved as a safetensors folder, inside a model folder of its own: `<dir>/tiny-llama/`."""
    models = tmp_path_factory.mktemp("models")
    tiny_model.save_pretrained(models / "tiny-llama")
    tokenizer.save_pretrained(models / "tiny-llama")
    return models / "tiny-llama"


@pytest.fixture(scope="session")
def chat_model_dir(tokenizer: PreTrainedTokenizerBase, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seeded Llama like ``tiny_model`` but with a 4096-token context, so an API test can keep a generation
    running for seconds (resume windows, cancels): `<dir>/tiny-chat/`."""
    folder = tmp_path_factory.mktemp("chat-models") / "tiny-chat"
    tiny_llama(tokenizer, seed=4321, context=4096).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
