"""The CPU weight formats (engine/weights.py): what each costs the demo model in quality, and how the host loads
and reports them."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import PreTrainedTokenizerBase

from engine.demo_model import demo_model_path
from engine.host import HostConfig, ModelHost
from engine.interface import WeightFormat
from engine.loader import choose_runtime, converted_copies, converted_folder
from engine.weights import Int4Linear, Int8Linear, apply_cpu_weights
from tests.engine.conftest import finish_of, greedy, run
from tests.model_fixtures import CONVERSION_CACHE, REPO

QUALITY_TEXT = Path(__file__).with_name("data") / "perplexity_text.txt"
# Perplexity above float32's that each format may cost (the issue's bar: 2%, bfloat16 0.5%).
ALLOWED_PERPLEXITY_RISE = {"bfloat16": 0.005, "int8": 0.02, "int4": 0.02}
FORMATS: list[WeightFormat] = ["bfloat16", "int8", "int4"]


def perplexity(model: torch.nn.Module, ids: torch.Tensor) -> float:
    with torch.inference_mode():
        return math.exp(model(ids, labels=ids).loss.float().item())


@pytest.fixture(scope="module", params=FORMATS)
def formatted(request: pytest.FixtureRequest, demo_model: torch.nn.Module) -> tuple[WeightFormat, torch.nn.Module]:
    weights: WeightFormat = request.param
    return weights, apply_cpu_weights(copy.deepcopy(demo_model), weights).eval()


def test_every_format_keeps_the_demo_models_perplexity_within_its_bar(
    formatted: tuple[WeightFormat, torch.nn.Module], demo_model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    weights, model = formatted
    ids = torch.tensor([tokenizer(QUALITY_TEXT.read_text())["input_ids"]])
    assert ids.shape[1] > 400  # a few hundred tokens: long enough that the bar means something
    reference = perplexity(demo_model, ids)
    measured = perplexity(model, ids)
    assert measured <= reference * (1 + ALLOWED_PERPLEXITY_RISE[weights]), (weights, reference, measured)
    linears = {type(module) for module in model.modules() if isinstance(module, (Int8Linear, Int4Linear))}
    assert linears == {"bfloat16": set(), "int8": {Int8Linear}, "int4": {Int4Linear, Int8Linear}}[weights]


def test_every_format_can_be_asked_for_and_the_runtime_says_which_and_what_it_computes_in() -> None:
    auto = choose_runtime(force_cpu=True)
    assert (auto.weights, auto.dtype) == ("float32", "float32") and "(auto)" in auto.reason
    for weights, dtype in (("float32", "float32"), ("bfloat16", "bfloat16"), ("int8", "float32"), ("int4", "float32")):
        runtime = choose_runtime(force_cpu=True, cpu_weights=weights)  # type: ignore[arg-type]
        assert (runtime.weights, runtime.dtype) == (weights, dtype)
        assert f"{weights} weights, {dtype} compute" in runtime.reason


async def test_the_host_loads_each_format_and_its_metadata_says_which_and_what_its_weights_take(
    tiny_model_dir: Path, tmp_path: Path,
) -> None:
    weight_bytes: dict[str, int] = {}
    for weights in ("float32", "bfloat16", "int8", "int4"):
        runtime = choose_runtime(force_cpu=True, cpu_weights=weights)  # type: ignore[arg-type]
        host = ModelHost(HostConfig(model_dirs=[tiny_model_dir.parent], default_model="tiny-llama",
                                    cache_dir=tmp_path / "cache", runtime=runtime))
        await host.start()
        try:
            metadata = host.metadata()
            assert metadata is not None and metadata["weights"] == weights
            weight_bytes[weights] = metadata["weight_bytes"]
            assert host.loaded is not None
            projection = host.loaded.model.model.layers[0].self_attn.q_proj
            expected = {"int8": Int8Linear, "int4": Int4Linear}.get(weights, torch.nn.Linear)
            assert type(projection) is expected
            events = await run(host.engine(), prompt_ids=[1, 2, 3], sampling=greedy(8, ignore_eos=True))
            assert len(finish_of(events).output_ids) == 8
        finally:
            await host.close()
    assert abs(weight_bytes["bfloat16"] - weight_bytes["float32"] / 2) < 0.01 * weight_bytes["float32"]
    # The embedding table stays in the compute dtype (float32 beside int8 and int4): only the linear layers shrink.
    assert weight_bytes["int4"] < weight_bytes["int8"] < weight_bytes["float32"]


def test_a_gguf_is_kept_converted_per_stored_dtype_and_bfloat16_takes_half_the_disk(demo_folder: Path) -> None:
    gguf = demo_model_path(REPO / "models")
    bfloat16_copy = converted_folder(gguf, CONVERSION_CACHE, "bfloat16")  # shared: converted once per machine
    assert bfloat16_copy != demo_folder and bfloat16_copy.name.endswith("-bfloat16")
    assert bfloat16_copy == converted_folder(gguf, CONVERSION_CACHE, "bfloat16")
    with safe_open(bfloat16_copy / "model.safetensors", "pt") as stored:
        assert {stored.get_slice(name).get_dtype() for name in stored.keys()} == {"BF16"}
    half = (demo_folder / "model.safetensors").stat().st_size / 2
    assert abs((bfloat16_copy / "model.safetensors").stat().st_size - half) < 0.01 * half
    assert {copy.name for copy in converted_copies(gguf, CONVERSION_CACHE)} >= {demo_folder.name, bfloat16_copy.name}
