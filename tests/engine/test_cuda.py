"""The same engine on an NVIDIA GPU: runtime choices and correctness. Marked `gpu`; skipped where there is none."""

from __future__ import annotations

import copy
import importlib.util

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from engine.loader import choose_runtime
from engine.local import LocalEngine
from tests.engine.conftest import ON_GPU, finish_of, greedy, run

# test_local_engine.py runs its correctness checks on the GPU too; these cover what only a GPU has.
pytestmark = ON_GPU


def test_runtime_picks_dtype_and_attention_from_the_gpu() -> None:
    runtime = choose_runtime()
    major, _ = torch.cuda.get_device_capability()
    assert runtime.device == "cuda"
    assert runtime.dtype == ("bfloat16" if major >= 8 else "float16")
    flash = major >= 8 and importlib.util.find_spec("flash_attn") is not None
    assert runtime.attention == ("flash_attention_2" if flash else "sdpa")
    assert choose_runtime(force_cpu=True).device == "cpu"


async def test_greedy_on_cuda_equals_model_generate(tiny_model: LlamaForCausalLM,
                                                    tokenizer: PreTrainedTokenizerBase) -> None:
    runtime = choose_runtime()
    model = copy.deepcopy(tiny_model).to(device="cuda", dtype=runtime.torch_dtype).eval()
    # transformers' forward, as generate runs it: in bf16 another attention kernel may round differently.
    engine = LocalEngine(model, tokenizer, max_context=512, decode="transformers")
    try:
        prompt = tokenizer.encode("the quick brown fox jumps over the lazy dog")
        events = await run(engine, prompt_ids=prompt, sampling=greedy(32))
        with torch.inference_mode():
            reference = model.generate(torch.tensor([prompt], device="cuda"), max_new_tokens=32, do_sample=False,
                                       attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device="cuda"))
        assert list(finish_of(events).output_ids) == reference[0, len(prompt):].tolist()
    finally:
        engine.close()


async def test_cuda_graph_replays_give_the_eager_static_steps_tokens_in_bf16(
    tiny_model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase
) -> None:
    """One row, so both run the same shapes (graphs pad rows to a power of two), past 128 tokens, so the buffers
    grow and the step is recorded again. Batches are compared with model.generate in test_local_engine.py."""
    model = copy.deepcopy(tiny_model).to(device="cuda", dtype=torch.bfloat16).eval()
    prompt = tokenizer.encode("the quick brown fox jumps over the lazy dog")
    outputs = {}
    for decode in ("static", "graphs"):
        engine = LocalEngine(model, tokenizer, max_context=512, decode=decode)
        try:
            events = await run(engine, prompt_ids=prompt, sampling=greedy(150, ignore_eos=True))
            static = engine.scheduler._static
            assert static is not None and static.graphs == (decode == "graphs")
            if decode == "graphs":
                assert set(static._recorded) == {(1, 256)}, "the step was not recorded (see the log for why)"
        finally:
            engine.close()
        outputs[decode] = finish_of(events).output_ids
    assert outputs["graphs"] == outputs["static"]
