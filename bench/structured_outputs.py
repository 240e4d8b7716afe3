"""What constrained decoding costs on the demo model, in one process and one run (issue 17, acceptance 6).

The LLMWS engine serving C closed-loop clients (C = 1 and 16, sampled at temperature 1, each request a different
prompt) without a constraint and with a JSON schema (the grammar cached after its first use, as in serving):
tokens/s while all C clients are in flight, and TTFT p50/p95. Then the grammar's own costs, for llguidance (what
the engine uses) and for xgrammar when it is installed (`pip install xgrammar`; not a project dependency): wrapping
the vocabulary, compiling a schema cold and again (cached), and filling one token mask along a valid answer.
Run: `.venv/bin/python bench/structured_outputs.py [--concurrency 1 16] [--tokens 64] [--rounds 2] [--repeats 2]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import llguidance
import llguidance.torch
from transformers import PreTrainedTokenizerBase

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.engine_throughput import Run, percentile  # noqa: E402
from engine.constraints import COMPACT_JSON, ConstraintCompiler  # noqa: E402
from engine.demo_model import demo_model_path  # noqa: E402
from engine.loader import choose_runtime, load  # noqa: E402
from engine.local import LocalEngine  # noqa: E402
from engine.registry import scan  # noqa: E402
from engine.requests import Constraint, FinishEvent, GenerationRequest, SamplingParams, TokenEvent  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOPICS = ["the sea", "mountains", "a city at night", "bread", "rain", "a library", "trains", "winter", "bees",
          "a garden", "the moon", "coffee", "a market", "rivers", "clocks", "music"]
SCHEMA = {"type": "object", "properties": {
    "title": {"type": "string", "maxLength": 40},
    "rating": {"type": "integer", "minimum": 1, "maximum": 5},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 4},
    "details": {"type": "object", "properties": {"summary": {"type": "string", "maxLength": 120},
                                                 "mood": {"enum": ["calm", "busy", "sad", "happy"]}},
                "required": ["summary", "mood"], "additionalProperties": False},
}, "required": ["title", "rating", "tags", "details"], "additionalProperties": False}
ANSWER = '{"title":"The sea at dawn","rating":4,"tags":["water","light"],"details":{"summary":"Waves.","mood":"calm"}}'


async def serve(engine: LocalEngine, prompts: list[list[int]], concurrency: int, tokens: int, rounds: int,
                constraint: Constraint | None, way: str) -> Run:
    """C clients sending ``rounds`` requests each, back to back; tokens/s counts what arrived while every client
    still had a request in flight."""
    ttft: list[float] = []
    arrivals: list[float] = []
    done_at: list[float] = []

    async def one(prompt: list[int], seed: int) -> None:
        sent = time.perf_counter()
        first = True
        params = SamplingParams(temperature=1, seed=seed, max_tokens=tokens)
        async for event in engine.generate(GenerationRequest(prompt_ids=prompt, sampling=params,
                                                             constraint=constraint)):
            if isinstance(event, TokenEvent) and event.token_ids:
                now = time.perf_counter()
                if first:
                    ttft.append(now - sent)
                    first = False
                arrivals.extend([now] * len(event.token_ids))
            elif isinstance(event, FinishEvent) and first:
                ttft.append(time.perf_counter() - sent)

    async def client(index: int) -> None:
        for round_ in range(rounds):
            at = round_ * concurrency + index
            await one(prompts[at % len(prompts)], at)
        done_at.append(time.perf_counter())

    started = time.perf_counter()
    await asyncio.gather(*(client(index) for index in range(concurrency)))
    until = min(done_at)
    return Run(way, concurrency, sum(at <= until for at in arrivals), until - started, ttft)


def timed(call: object) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()  # type: ignore[operator]
    return time.perf_counter() - started, result


def llguidance_costs(tokenizer: PreTrainedTokenizerBase, vocab: int, eos: set[int]) -> list[tuple[str, float]]:
    wrap, compiler = timed(lambda: ConstraintCompiler(tokenizer, vocab, eos))
    assert isinstance(compiler, ConstraintCompiler)
    constraint = Constraint("json_schema", json.dumps(SCHEMA))
    cold, _ = timed(lambda: compiler.compile(constraint).deep_copy())
    cached = statistics.median(timed(lambda: compiler.compile(constraint).deep_copy())[0] for _ in range(50))
    matcher = compiler.compile(constraint).deep_copy()
    bitmask = llguidance.torch.allocate_token_bitmask(1, vocab)
    fills = []
    for token in tokenizer.encode(ANSWER):
        fills.append(timed(lambda: llguidance.torch.fill_next_token_bitmask(matcher, bitmask, 0))[0])
        assert matcher.consume_token(token), "the sample answer must match the schema"
    assert COMPACT_JSON  # the engine's JSON settings: what was measured
    return [("wrap vocabulary", wrap), ("compile cold", cold), ("compile cached", cached),
            ("mask, mean per token", statistics.mean(fills)), ("mask, first token", fills[0])]


def xgrammar_costs(tokenizer: PreTrainedTokenizerBase, vocab: int, eos: set[int]) -> list[tuple[str, float]] | str:
    try:
        import xgrammar  # noqa: PLC0415 (optional: measured only where installed)
    except ImportError as exc:
        return f"not installed ({exc})"
    wrap, info = timed(lambda: xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab,
                                                                        stop_token_ids=sorted(eos)))
    compiler = xgrammar.GrammarCompiler(info, cache_enabled=True)  # type: ignore[arg-type]
    text = json.dumps(SCHEMA)

    def matcher_of() -> xgrammar.GrammarMatcher:  # compact JSON, as the engine's llguidance grammars
        return xgrammar.GrammarMatcher(compiler.compile_json_schema(text, any_whitespace=False, separators=(",", ":")))

    cold, _ = timed(matcher_of)
    cached = statistics.median(timed(matcher_of)[0] for _ in range(50))
    matcher = matcher_of()
    bitmask = xgrammar.allocate_token_bitmask(1, vocab)
    fills = []
    for token in tokenizer.encode(ANSWER):
        fills.append(timed(lambda: matcher.fill_next_token_bitmask(bitmask, 0))[0])
        assert matcher.accept_token(token), "the sample answer must match the schema"
    return [("wrap vocabulary", wrap), ("compile cold", cold), ("compile cached", cached),
            ("mask, mean per token", statistics.mean(fills)), ("mask, first token", fills[0])]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--tokens", type=int, default=64, help="max_tokens of every request")
    parser.add_argument("--rounds", type=int, default=2, help="requests per client")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each way; the fastest is shown")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    runtime = choose_runtime(cpu_threads=args.threads)
    info = next(model for model in scan([REPO / "models"]) if model.path == demo_model_path(REPO / "models"))
    loaded = load(info, cache_dir=REPO / "var" / "cache" / "converted", runtime=runtime)
    model, tokenizer = loaded.model, loaded.tokenizer
    engine = LocalEngine(model, tokenizer, max_context=2048, max_batch_size=max(args.concurrency))
    prompts = [engine.encode_messages([{"role": "user", "content": f"Review {topic} as JSON: title, rating, "
                                        "tags, details."}]) for topic in TOPICS * 4]
    schema = Constraint("json_schema", json.dumps(SCHEMA))
    print(f"demo model {info.name} on {runtime.reason}; max_tokens {args.tokens}, temperature 1")
    asyncio.run(serve(engine, prompts[-2:], 2, 4, 1, schema, "warm-up"))  # compiles and caches the schema
    runs: list[Run] = []
    # The two ways alternate, ``--repeats`` times, and each keeps its fastest run: on a machine shared with other
    # work, that is the one least disturbed.
    for concurrency in args.concurrency:
        rounds = args.rounds if concurrency > 1 else 4 * args.rounds  # enough TTFTs for a p95 alone too
        best: dict[str, Run] = {}
        for _ in range(args.repeats):
            for constraint, way in ((None, "no schema"), (schema, "json_schema")):
                run = asyncio.run(serve(engine, prompts, concurrency, args.tokens, rounds, constraint, way))
                if way not in best or run.tokens_per_s > best[way].tokens_per_s:
                    best[way] = run
        runs.extend(best.values())
    vocab, eos = model.config.vocab_size, engine.eos_token_ids
    engine.close()

    print(f"\n{'way':<12} {'conc':>4} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p95':>9}")
    for run in runs:
        print(f"{run.way:<12} {run.concurrency:>4} {run.tokens_per_s:>8.1f} {percentile(run.ttft, .5) * 1e3:>7.1f}ms "
              f"{percentile(run.ttft, .95) * 1e3:>7.1f}ms")
    print(f"\n{'conc':>4} {'schema tok/s / none':>20} {'TTFT p50 added':>15}")
    for concurrency in args.concurrency:
        free, guided = (next(r for r in runs if r.concurrency == concurrency and r.way == way)
                        for way in ("no schema", "json_schema"))
        added = (percentile(guided.ttft, .5) - percentile(free.ttft, .5)) * 1e3
        print(f"{concurrency:>4} {guided.tokens_per_s / free.tokens_per_s:>19.2f}x {added:>13.1f}ms")

    print(f"\ngrammar costs (the schema above, {vocab}-token vocabulary)")
    llg = llguidance_costs(tokenizer, vocab, eos)
    xgr = xgrammar_costs(tokenizer, vocab, eos)
    print(f"{'':<22} {'llguidance':>12} {'xgrammar':>12}")
    for index, (name, seconds) in enumerate(llg):
        other = f"{xgr[index][1] * 1e3:>10.3f}ms" if isinstance(xgr, list) else ""
        print(f"{name:<22} {seconds * 1e3:>10.3f}ms {other:>12}")
    if isinstance(xgr, str):
        print(f"xgrammar: {xgr}")


if __name__ == "__main__":
    main()
