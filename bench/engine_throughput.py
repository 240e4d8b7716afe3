"""Engine throughput on the demo model, in one process and one run, against plain transformers.

Three ways to serve C concurrent requests of 128 new tokens (end-of-sequence ignored): sequential
`model.generate`, one left-padded `model.generate` batch of C, and the LLMWS engine serving C closed-loop clients
(several requests each, every prompt different, lengths varying around the same mean, so later requests join a
running batch), with its prefix cache and without. Prints
aggregate tokens/s, TTFT p50/p95 and inter-token latency p50/p95, then the ratios the issue's goals are stated in.
Run: `.venv/bin/python bench/engine_throughput.py [--concurrency 1 4 16 32] [--tokens 128] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from engine.demo_model import demo_model_path
from engine.loader import choose_runtime, load
from engine.local import LocalEngine
from engine.registry import scan
from engine.requests import GenerationRequest, SamplingParams, TokenEvent

REPO = Path(__file__).resolve().parents[1]
NO_PREFIX = "  no prefix cache"
FORMS = ["Write a short poem about {}.", "Tell me a story about {}.", "What should I know about {}?",
         "Describe {} to a child.", "Write a haiku about {}.", "Give me three facts about {}.",
         "Explain why people like {}.", "Write a song verse about {}."]
TOPICS = ["the sea", "mountains", "a city at night", "bread", "rain", "a library", "trains", "winter", "bees",
          "a garden", "the moon", "coffee", "a market", "rivers", "clocks", "music"]


@dataclass
class Run:
    way: str
    concurrency: int
    tokens: int
    seconds: float
    ttft: list[float]
    itl: list[float] = field(default_factory=list)  # inter-token gaps, where the run measured them

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


class StepClock(LogitsProcessor):
    """Called once per generated token position: the times at which `generate` produced each step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.times.append(time.perf_counter())
        return scores


def generate_timed(model: torch.nn.Module, prompts: list[list[int]], new_tokens: int, pad_id: int
                   ) -> tuple[float, list[float]]:
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    clock = StepClock()
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(ids.to(model.device), attention_mask=mask.to(model.device), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens,
                       do_sample=False, pad_token_id=pad_id, logits_processor=LogitsProcessorList([clock]))
    return started, clock.times


def run_sequential(model: torch.nn.Module, prompts: list[list[int]], new_tokens: int, pad_id: int) -> Run:
    ttft, itl, began = [], [], time.perf_counter()
    for prompt in prompts:
        started, times = generate_timed(model, [prompt], new_tokens, pad_id)
        ttft.append(times[0] - began)  # a sequential server makes later requests wait for earlier ones
        itl += [b - a for a, b in zip(times, times[1:], strict=False)]
    return Run("sequential generate", len(prompts), len(prompts) * new_tokens, time.perf_counter() - began, ttft, itl)


def run_padded(model: torch.nn.Module, prompts: list[list[int]], new_tokens: int, pad_id: int) -> Run:
    started, times = generate_timed(model, prompts, new_tokens, pad_id)
    steps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return Run("padded generate batch", len(prompts), len(prompts) * new_tokens, times[-1] - started,
               [times[0] - started] * len(prompts), steps * len(prompts))


@dataclass
class Answer:
    """One engine request as its client saw it: when it started, and when each batch of tokens arrived."""

    started: float
    arrivals: list[tuple[float, int]]  # (time, tokens in that event)

    @property
    def ttft(self) -> float:
        return self.arrivals[0][0] - self.started

    @property
    def gaps(self) -> list[float]:
        return [(now - before) / count for (before, _), (now, count) in zip(self.arrivals, self.arrivals[1:],
                                                                          strict=False) for _ in range(count)]


async def run_engine(engine: LocalEngine, prompts: list[list[int]], concurrency: int, new_tokens: int, rounds: int,
                     label: str = "LLMWS engine") -> list[Run]:
    """C closed-loop clients, each sending ``rounds`` requests back to back, every one a different prompt (the
    chat template's system prompt is all they share). Lengths vary around ``new_tokens`` (same mean), as real
    answers do, so after the first round arrivals spread out and join a running batch.

    The headline tokens/s counts the tokens that arrived while all C clients had a request in flight (until the
    first client is done): that is serving at concurrency C. The whole run, drain included, is reported too: its
    tail runs with ever fewer rows because the clients' total lengths differ, which a padded batch never faces."""
    lengths = [new_tokens // 2 + (new_tokens * ((i * 7) % 11)) // 10 for i in range(concurrency * rounds)]
    by_round: list[list[Answer]] = [[] for _ in range(rounds)]
    done_at: list[float] = []

    async def one(prompt: list[int], max_tokens: int) -> Answer:
        params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
        answer = Answer(time.perf_counter(), [])
        async for event in engine.generate(GenerationRequest(prompt_ids=prompt, sampling=params)):
            if isinstance(event, TokenEvent) and event.token_ids:
                answer.arrivals.append((time.perf_counter(), len(event.token_ids)))
        return answer

    async def client(index: int) -> None:
        for round_ in range(rounds):
            at = round_ * concurrency + index
            by_round[round_].append(await one(prompts[at % len(prompts)], lengths[at]))
        done_at.append(time.perf_counter())

    started = time.perf_counter()
    await asyncio.gather(*(client(index) for index in range(concurrency)))
    seconds = time.perf_counter() - started
    everything = [answer for answers in by_round for answer in answers]
    steady = [answer for answers in by_round[1:] for answer in answers] or everything
    full_until = min(done_at)
    full_tokens = sum(count for answer in everything for at, count in answer.arrivals if at <= full_until)
    total_tokens = sum(count for answer in everything for _, count in answer.arrivals)

    def summary(way: str, tokens: int, seconds: float, answers: list[Answer]) -> Run:
        return Run(way, concurrency, tokens, seconds, [a.ttft for a in answers], [g for a in answers for g in a.gaps])

    if label != "LLMWS engine":
        return [summary(label, full_tokens, full_until - started, everything)]
    return [summary(label, full_tokens, full_until - started, everything),
            summary("  rounds 2+ (joining)", full_tokens, full_until - started, steady),
            summary("  whole run, drain too", total_tokens, seconds, everything)]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3, help="requests per engine client")
    parser.add_argument("--prefix-cache-mb", type=int, default=256, help="the engine's prefix cache (0: off)")
    args = parser.parse_args()

    runtime = choose_runtime(cpu_threads=args.threads)
    info = next(model for model in scan([REPO / "models"]) if model.path == demo_model_path(REPO / "models"))
    loaded = load(info, cache_dir=REPO / "var" / "cache" / "converted", runtime=runtime)
    model, tokenizer = loaded.model, loaded.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    engine = LocalEngine(model, tokenizer, max_context=4096, max_batch_size=max(args.concurrency),
                         prefix_cache_bytes=args.prefix_cache_mb * 1024 * 1024)
    plain_engine = LocalEngine(model, tokenizer, max_context=4096, max_batch_size=max(args.concurrency))
    prompts_all = [engine.encode_messages([{"role": "user", "content": form.format(topic)}])
                   for form in FORMS for topic in TOPICS]
    print(f"demo model {info.name} on {runtime.reason}; {args.tokens} new tokens per request")

    runs: list[Run] = []
    generate_timed(model, [prompts_all[0]], 4, pad_id)  # warm-up
    asyncio.run(run_engine(engine, prompts_all[-2:], 2, 4, 1))
    asyncio.run(run_engine(plain_engine, prompts_all[-2:], 2, 4, 1, "warm-up"))
    for concurrency in args.concurrency:
        prompts = prompts_all[:concurrency]
        runs.append(run_sequential(model, prompts, args.tokens, pad_id))
        runs.append(run_padded(model, prompts, args.tokens, pad_id))
        mixed = prompts_all[:concurrency * args.rounds]
        runs.extend(asyncio.run(run_engine(engine, mixed, concurrency, args.tokens, args.rounds)))
        runs.extend(asyncio.run(run_engine(plain_engine, mixed, concurrency, args.tokens, args.rounds, NO_PREFIX)))
    engine.close()
    plain_engine.close()

    print(f"\n{'way':<22} {'conc':>4} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p95':>9} {'ITL p50':>8} {'ITL p95':>8}")
    for run in runs:
        print(f"{run.way:<22} {run.concurrency:>4} {run.tokens_per_s:>8.1f} {percentile(run.ttft, .5) * 1e3:>7.0f}ms "
              f"{percentile(run.ttft, .95) * 1e3:>7.0f}ms {percentile(run.itl, .5) * 1e3:>6.0f}ms "
              f"{percentile(run.itl, .95) * 1e3:>6.0f}ms")
    by = {(run.way, run.concurrency): run for run in runs}
    print(f"\n{'conc':>4} {'engine/padded':>14} {'whole run/padded':>17} {'engine/sequential':>18} "
          f"{'TTFT p50 / conc-1':>18} {'rounds 2+':>10} {'no prefix cache/padded':>23}")
    first = by[("LLMWS engine", args.concurrency[0])]
    for concurrency in args.concurrency:
        mine, joining = by[("LLMWS engine", concurrency)], by[("  rounds 2+ (joining)", concurrency)]
        whole, padded = by[("  whole run, drain too", concurrency)], by[("padded generate batch", concurrency)]
        print(f"{concurrency:>4} {mine.tokens_per_s / padded.tokens_per_s:>13.2f}x "
              f"{whole.tokens_per_s / padded.tokens_per_s:>16.2f}x "
              f"{mine.tokens_per_s / by[('sequential generate', concurrency)].tokens_per_s:>17.2f}x "
              f"{statistics.median(mine.ttft) / statistics.median(first.ttft):>17.2f}x "
              f"{statistics.median(joining.ttft) / statistics.median(first.ttft):>9.2f}x "
              f"{by[(NO_PREFIX, concurrency)].tokens_per_s / padded.tokens_per_s:>22.2f}x")


if __name__ == "__main__":
    main()
