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
    engine = LocalEngine(model, tokenizer, max_context=512)
    try:
        prompt = tokenizer.encode("the quick brown fox jumps over the lazy dog")
        events = await run(engine, prompt_ids=prompt, sampling=greedy(32))
        with torch.inference_mode():
            reference = model.generate(torch.tensor([prompt], device="cuda"), max_new_tokens=32, do_sample=False,
                                       attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device="cuda"))
        assert list(finish_of(events).output_ids) == reference[0, len(prompt):].tolist()
    finally:
        engine.close()
