"""The engine on a GPU with a model of real size (issue 3, acceptance 3), in one process and one run.

A Llama of about 1.2B parameters with random weights (built from a config: nothing is downloaded), in the dtype the
engine picks (bf16 on compute capability ≥ 8), on the demo model's tokenizer. It measures:
- the device's copy bandwidth: a large device-to-device copy, counting the bytes read and the bytes written;
- the bound: that bandwidth over the model's bytes, the tokens/s of a decoder that reads every weight once a token;
- single-stream decode tokens/s through plain `model.generate` and through the engine;
- aggregate tokens/s of 64 concurrent engine requests, and of one padded `generate` batch of 64;
the engine once per decode step it can take (engine/static_decode.py): transformers' forward, the static step, and
on a GPU the static step replayed from CUDA graphs (the default there).
Goals: the engine's single stream ≥ 60 % of the bound; at concurrency 64 ≥ 15× its single stream.

On a device machine: see docs/engine.md, "On a GPU" (`make gpu-kit` prepares what travels). `--tiny` runs a
two-layer model on whatever device there is, in seconds: the suite runs it on the CPU so the script keeps working.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.engine_throughput import generate_timed  # noqa: E402
from engine.demo_model import demo_model_path  # noqa: E402
from engine.interface import DecodeMode  # noqa: E402
from engine.loader import Runtime, choose_runtime, converted_folder  # noqa: E402
from engine.local import LocalEngine  # noqa: E402
from engine.requests import GenerationRequest, SamplingParams, TokenEvent  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SINGLE_GOAL = 0.60  # of the bandwidth bound
CONCURRENT_GOAL = 15.0  # times the single stream
# About Llama 3.2 1B's shape (head_dim 64, 4 query heads per KV head), with 18 layers on the demo's 49k vocabulary.
FULL = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 18, "num_attention_heads": 32,
        "num_key_value_heads": 8}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2}


@dataclass
class Measured:
    way: str
    concurrency: int
    tokens_per_s: float
    single: float  # the same way's single stream, for the ratio


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, mebibytes: int) -> float:
    """Bytes per second of a device-to-device copy, read and write both counted (the median of 10)."""
    source = torch.empty(mebibytes * 2**20 // 4, dtype=torch.float32, device=device).fill_(1)
    target = torch.empty_like(source)
    for _ in range(3):
        target.copy_(source)
    times = []
    for _ in range(10):
        synchronize(device)
        started = time.perf_counter()
        target.copy_(source)
        synchronize(device)
        times.append(time.perf_counter() - started)
    return 2 * source.nbytes / sorted(times)[len(times) // 2]


def build_model(tokenizer: PreTrainedTokenizerBase, shape: dict[str, int], runtime: Runtime) -> PreTrainedModel:
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=4096, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **shape)
    torch.manual_seed(0)
    with torch.device(runtime.device):  # initialised where it runs: a 1B model's init on the CPU takes a minute
        model = AutoModelForCausalLM.from_config(config, dtype=runtime.torch_dtype,
                                                 attn_implementation=runtime.attention)
    return model.eval()


def prompts(tokenizer: PreTrainedTokenizerBase, count: int) -> list[list[int]]:
    topics = ["the sea", "mountains", "a city at night", "bread", "rain", "a library", "trains", "winter"]
    return [tokenizer.encode(f"Request {i}: write a long story about {topics[i % len(topics)]}.")
            for i in range(count)]


def generate_rate(model: PreTrainedModel, batch: list[list[int]], new_tokens: int, pad_id: int) -> float:
    """Decode tokens/s of one left-padded `generate` call (the prefill step left out)."""
    _, times = generate_timed(model, batch, new_tokens, pad_id)
    synchronize(model.device)
    return len(batch) * (len(times) - 1) / (times[-1] - times[0])


async def engine_rates(engine: LocalEngine, batch: list[list[int]], new_tokens: int) -> tuple[float, float]:
    """Tokens/s of ``len(batch)`` requests sent at once: over the whole run, and while all of them were decoding
    (from the last first token to the first finish)."""
    arrivals: list[list[tuple[float, int]]] = [[] for _ in batch]

    async def one(index: int) -> None:
        params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
        async for event in engine.generate(GenerationRequest(prompt_ids=batch[index], sampling=params)):
            if isinstance(event, TokenEvent) and event.token_ids:
                arrivals[index].append((time.perf_counter(), len(event.token_ids)))

    started = time.perf_counter()
    await asyncio.gather(*(one(index) for index in range(len(batch))))
    ended = time.perf_counter()
    total = sum(count for answer in arrivals for _, count in answer)
    all_decoding = max(answer[0][0] for answer in arrivals)
    first_done = min(answer[-1][0] for answer in arrivals)
    steady = sum(count for answer in arrivals for at, count in answer if all_decoding < at <= first_done)
    return total / (ended - started), steady / (first_done - all_decoding)


def profile_decode(model: PreTrainedModel, prompt: list[int], rows: int) -> None:
    """Where a decode step's time goes: the top operators of a short `generate` (for the next change, not a goal)."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415 (only with --profile)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if model.device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        generate_rate(model, [prompt] * rows, 16, 0)
    sort = "cuda_time_total" if model.device.type == "cuda" else "cpu_time_total"
    print(profiler.key_averages().table(sort_by=sort, row_limit=15))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="a tokenizer folder (default: the demo model's, converted from its GGUF if need be)")
    parser.add_argument("--tokens", type=int, default=256, help="new tokens per request")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--tiny", action="store_true", help="a two-layer model: checks the script, measures nothing")
    parser.add_argument("--profile", action="store_true", help="also print the top operators of a decode")
    args = parser.parse_args()

    folder = args.tokenizer or converted_folder(demo_model_path(REPO / "models"), REPO / "var" / "cache" / "converted")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    runtime = choose_runtime()
    device = torch.device(runtime.device)
    model = build_model(tokenizer, TINY if args.tiny else FULL, runtime)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    model_bytes = sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())
    bandwidth = copy_bandwidth(device, 64 if args.tiny else 2048)
    bound = bandwidth / model_bytes
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}: {runtime.reason}")
    print(f"model: Llama, {parameters / 1e9:.3f}B parameters, {model_bytes / 1e9:.2f} GB; copy bandwidth "
          f"{bandwidth / 1e12:.2f} TB/s (read + write); bound {bound:.0f} tokens/s")

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batch = prompts(tokenizer, args.concurrency)
    generate_rate(model, batch[:1], 8, pad_id)  # warm-up: kernels, the allocator
    single = generate_rate(model, batch[:1], args.tokens, pad_id)
    runs = [Measured("plain generate", 1, single, single),
            Measured("padded generate batch", args.concurrency, generate_rate(model, batch, args.tokens, pad_id),
                     single)]
    decodes: list[DecodeMode] = ["transformers", "static"] + (["graphs"] if device.type == "cuda" else [])
    for decode in decodes:
        runs += measure_engine(LocalEngine(model, tokenizer, max_context=2048, max_batch_size=args.concurrency,
                                           max_queue=4 * args.concurrency, decode=decode), batch, args.tokens)

    print(f"\n{'way':<40} {'conc':>4} {'tokens/s':>10} {'of bound':>9} {'× its single':>13}")
    for run in runs:
        print(f"{run.way:<40} {run.concurrency:>4} {run.tokens_per_s:>10.1f} {run.tokens_per_s / bound:>8.0%} "
              f"{run.tokens_per_s / run.single:>12.1f}×")
    met = {True: "met", False: "missed"}
    for run in runs:
        if run.way.startswith("engine") and run.concurrency == 1:
            print(f"goal: {run.way} single stream ≥ {SINGLE_GOAL:.0%} of the bound: {run.tokens_per_s / bound:.0%} "
                  f"({met[run.tokens_per_s / bound >= SINGLE_GOAL]})")
        elif run.way.startswith("engine"):
            ratio = run.tokens_per_s / run.single
            print(f"goal: {run.way} at concurrency {run.concurrency} ≥ {CONCURRENT_GOAL:.0f}× its single stream: "
                  f"{ratio:.1f}× ({met[ratio >= CONCURRENT_GOAL]})")
    if args.profile:
        profile_decode(model, batch[0], 1)


def measure_engine(engine: LocalEngine, batch: list[list[int]], new_tokens: int) -> list[Measured]:
    """Single stream and all of ``batch`` at once, each after an untimed run of the same shape (CUDA graphs are
    recorded during the first)."""
    way = f"engine, {engine.scheduler.decode}"
    try:
        asyncio.run(engine_rates(engine, batch[:1], new_tokens))
        single, _ = asyncio.run(engine_rates(engine, batch[:1], new_tokens))
        asyncio.run(engine_rates(engine, batch, new_tokens))
        whole, steady = asyncio.run(engine_rates(engine, batch, new_tokens))
    finally:
        engine.close()
    return [Measured(way, 1, single, single), Measured(way, len(batch), whole, single),
            Measured(f"  {way}, all in flight", len(batch), steady, single)]


if __name__ == "__main__":
    main()
