"""Constrained decoding on the real engine (engine/constraints.py): a tiny random-weight model, where only the
grammar can make an answer valid, and the demo tokenizer; mixed batches keep unconstrained rows exact."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator

import jsonschema
import pytest
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from engine.constraints import MAX_SPEC_CHARS, ConstraintCompiler, ConstraintViolated, mask_logits
from engine.errors import InvalidParameters
from engine.local import LocalEngine
from engine.requests import Constraint, EngineEvent, ErrorEvent, SamplingParams
from tests.engine.conftest import finish_of, greedy, reference_ids, run, text_of, tiny_engine_on
from tests.support.engine import prompts
from tests.support.schemas import BROKEN_SCHEMA, MAX_TOKENS, SCHEMAS


def schema(name: str) -> Constraint:
    return Constraint("json_schema", json.dumps(SCHEMAS[name]))


def sampled(seed: int, max_tokens: int = MAX_TOKENS) -> SamplingParams:
    return SamplingParams(temperature=1, seed=seed, max_tokens=max_tokens)


async def test_100_sampled_answers_over_five_schemas_all_validate(tiny_engine: LocalEngine) -> None:
    names = sorted(SCHEMAS)
    results = await asyncio.gather(*(run(tiny_engine, prompt="Answer in JSON:", sampling=sampled(seed),
                                         constraint=schema(names[seed % 5])) for seed in range(100)))
    for seed, events in enumerate(results):
        assert finish_of(events).finish_reason == "stop", (seed, text_of(events))
        jsonschema.validate(json.loads(text_of(events)), SCHEMAS[names[seed % 5]])


async def test_json_object_answers_that_end_parse_to_an_object(tiny_engine: LocalEngine) -> None:
    """Any object is open-ended, and a random model may fill one until max_tokens; every answer that ends is an
    object (the demo model's always end: tests/api/test_structured_outputs.py)."""
    results = await asyncio.gather(*(run(tiny_engine, prompt="JSON:", sampling=sampled(seed),
                                         constraint=Constraint("json_object")) for seed in range(16)))
    for events in results:
        if finish_of(events).finish_reason == "stop":  # a random model may fill any object to max_tokens
            assert isinstance(json.loads(text_of(events)), dict)
    assert sum(finish_of(events).finish_reason == "stop" for events in results) >= 4


@pytest.mark.parametrize(("constraint", "matches"), [
    (Constraint("regex", r"[0-9]{3}-[a-z]{2}"), lambda text: re.fullmatch(r"[0-9]{3}-[a-z]{2}", text)),
    (Constraint("choice", json.dumps(["yes", "no", "maybe not"])), lambda text: text in ("yes", "no", "maybe not")),
    (Constraint("grammar", 'start: "(" NUMBER ")"\nNUMBER: /[1-9][0-9]?/'),
     lambda text: re.fullmatch(r"\([1-9][0-9]?\)", text)),
], ids=["regex", "choice", "grammar"])
async def test_regex_choice_and_grammar_outputs_match_exactly(tiny_engine: LocalEngine, constraint: Constraint,
                                                             matches: object) -> None:
    results = await asyncio.gather(*(run(tiny_engine, prompt="Say:", sampling=sampled(seed, 40),
                                         constraint=constraint) for seed in range(8)))
    for events in results:
        assert finish_of(events).finish_reason == "stop"
        assert matches(text_of(events)), text_of(events)  # type: ignore[operator]


@pytest.fixture(params=["transformers", "static"])
async def either_engine(request: pytest.FixtureRequest, tiny_model: LlamaForCausalLM,
                        tokenizer: PreTrainedTokenizerBase) -> AsyncIterator[LocalEngine]:
    """The tiny model behind each decode path the CPU can take (engine/static_decode.py)."""
    engine = tiny_engine_on(tiny_model, tokenizer, decode=request.param)
    yield engine
    engine.close()


async def test_unconstrained_rows_of_a_mixed_batch_equal_model_generate(
    either_engine: LocalEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    tiny_engine = either_engine
    batch = prompts(tokenizer, 12)
    names = sorted(SCHEMAS)

    def request(i: int) -> dict[str, object]:
        if i % 2:
            return {"prompt_ids": batch[i], "sampling": sampled(i), "constraint": schema(names[i % 5])}
        return {"prompt_ids": batch[i], "sampling": greedy(30)}

    results = await asyncio.gather(*(run(tiny_engine, **request(i)) for i in range(12)))
    for i in range(0, 12, 2):
        assert list(finish_of(results[i]).output_ids) == reference_ids(tiny_engine.model, batch[i], 30), i
    for i in range(1, 12, 2):
        jsonschema.validate(json.loads(text_of(results[i])), SCHEMAS[names[i % 5]])


async def test_greedy_constrained_rows_take_the_likeliest_allowed_token(tiny_engine: LocalEngine) -> None:
    constraint = Constraint("choice", json.dumps(["alpha", "beta", "gamma"]))
    first = await run(tiny_engine, prompt="Pick:", sampling=greedy(10), constraint=constraint)
    again = await run(tiny_engine, prompt="Pick:", sampling=greedy(10), constraint=constraint)
    assert text_of(first) == text_of(again) in ("alpha", "beta", "gamma")


async def test_a_schema_the_library_rejects_is_refused_fast_naming_the_param(tiny_engine: LocalEngine) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidParameters) as refused:
        await run(tiny_engine, prompt="x", sampling=greedy(5),
                  constraint=Constraint("json_schema", json.dumps(BROKEN_SCHEMA), param="response_format"))
    assert time.monotonic() - started < 2
    assert refused.value.param == "response_format" and "integr" in refused.value.message
    # Refused the same way from the cache, and the engine goes on serving.
    with pytest.raises(InvalidParameters):
        await run(tiny_engine, prompt="x", sampling=greedy(5),
                  constraint=Constraint("json_schema", json.dumps(BROKEN_SCHEMA), param="tools[0]"))
    events = await run(tiny_engine, prompt="x", sampling=greedy(5))
    assert finish_of(events).finish_reason in ("stop", "length")


@pytest.mark.parametrize(("constraint", "fragment"), [
    (Constraint("regex", "[a-", param="structured_outputs.regex"), "regex"),
    (Constraint("grammar", "start: missing_rule", param="structured_outputs.grammar"), "unknown name"),
    (Constraint("choice", "[]", param="structured_outputs.choice"), "non-empty"),
    (Constraint("json_schema", "{not json", param="response_format"), "json_schema"),
    (Constraint("json_schema", " " * (MAX_SPEC_CHARS + 1), param="response_format"), "longer than"),
], ids=["regex", "lark", "empty-choice", "not-json", "too-long"])
async def test_bad_constraints_are_refused_before_any_work(tiny_engine: LocalEngine, constraint: Constraint,
                                                           fragment: str) -> None:
    steps = tiny_engine.stats().steps
    with pytest.raises(InvalidParameters) as refused:
        await run(tiny_engine, prompt="x", sampling=greedy(5), constraint=constraint)
    assert refused.value.param == constraint.param and fragment in refused.value.message
    assert tiny_engine.stats().steps == steps


async def test_ignore_eos_with_a_constraint_is_refused(tiny_engine: LocalEngine) -> None:
    with pytest.raises(InvalidParameters) as refused:
        await run(tiny_engine, prompt="x", sampling=SamplingParams(max_tokens=5, ignore_eos=True),
                  constraint=Constraint("json_object"))
    assert refused.value.param == "ignore_eos"


async def test_n_choices_each_follow_the_grammar(tiny_engine: LocalEngine) -> None:
    events = await run(tiny_engine, prompt="JSON:", sampling=SamplingParams(temperature=1, seed=3, n=4,
                                                                           max_tokens=MAX_TOKENS),
                       constraint=schema("enums"))
    for index in range(4):
        jsonschema.validate(json.loads(text_of(events, index)), SCHEMAS["enums"])


def test_a_compiled_constraint_is_cached(tokenizer: PreTrainedTokenizerBase) -> None:
    compiler = ConstraintCompiler(tokenizer, len(tokenizer), {tokenizer.eos_token_id})
    first = compiler.compile(schema("arrays"))
    assert compiler.compile(schema("arrays")) is first
    assert compiler.compile(schema("enums")) is not first


def test_a_token_the_grammar_refuses_ends_the_row_with_an_error(tokenizer: PreTrainedTokenizerBase) -> None:
    compiler = ConstraintCompiler(tokenizer, len(tokenizer), {tokenizer.eos_token_id})
    row = asyncio.run(compiler.rows(Constraint("choice", '["yes"]'), [1], 1))[0]
    with pytest.raises(ConstraintViolated):
        row.advance(tokenizer.encode("no")[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masking_forbids_exactly_what_each_grammar_refuses_and_leaves_other_rows_alone(
        tokenizer: PreTrainedTokenizerBase, dtype: torch.dtype) -> None:
    """Rows 1 and 3 of five are guided, at different places in their grammars: each keeps its own logit, bit for
    bit, on exactly the tokens its matcher allows (read from the matcher's own bitmask, one Python bit at a time)
    and -inf elsewhere; rows 0, 2 and 4 are untouched. The logits are the last position of a forward's output, a
    strided view, as the scheduler passes them."""
    compiler = ConstraintCompiler(tokenizer, len(tokenizer), {tokenizer.eos_token_id})
    rows = asyncio.run(compiler.rows(schema("enums"), [1], 1)) + asyncio.run(compiler.rows(
        Constraint("regex", "[0-9]{1,3} apples"), [1], 1))
    for token in tokenizer.encode("12")[:1]:
        rows[1].advance(token)
    output = torch.randn(5, 2, len(tokenizer), generator=torch.Generator().manual_seed(7)).to(dtype)
    logits = output[:, -1, :]
    before = logits.clone()
    expected = [_allowed(row.matcher.compute_bitmask(), len(tokenizer)) for row in rows]
    assert mask_logits(logits, [(1, rows[0]), (3, rows[1])]) == []
    for row in (0, 2, 4):
        assert torch.equal(logits[row], before[row])
    for row, allowed in zip((1, 3), expected, strict=True):
        assert 0 < len(allowed) < len(tokenizer)
        finite = torch.isfinite(logits[row])
        assert set(finite.nonzero().flatten().tolist()) == allowed
        assert torch.equal(logits[row][finite], before[row][finite])
        assert bool((logits[row][~finite] == float("-inf")).all())


def _allowed(bitmask: bytes, width: int) -> set[int]:
    return {token for token in range(width) if bitmask[token // 8] >> (token % 8) & 1}


def test_the_grammar_starts_after_the_reasoning_block(tokenizer: PreTrainedTokenizerBase) -> None:
    """A vocabulary with <think> and </think> and a template that uses them: the first token may open the block,
    which stays unmasked until it closes; a prompt that opened the block itself starts unmasked."""
    thinking = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    thinking.add_tokens(["<think>", "</think>"], special_tokens=False)
    thinking.chat_template = "{{ messages[0]['content'] }}<think>"
    opened, closed = thinking.convert_tokens_to_ids(["<think>", "</think>"])
    compiler = ConstraintCompiler(thinking, len(thinking), {thinking.eos_token_id})
    choice = Constraint("choice", '["yes"]')
    row = asyncio.run(compiler.rows(choice, thinking.encode("Q:"), 1))[0]
    assert row.phase == "opening"
    logits = torch.zeros(1, len(thinking))
    mask_logits(logits, [(0, row)])
    allowed = set(torch.isfinite(logits[0]).nonzero().flatten().tolist())
    assert opened in allowed and thinking.encode("yes")[0] in allowed and len(allowed) < 10
    row.advance(opened)
    assert not row.masks
    for token in thinking.encode("I think no"):
        row.advance(token)  # reasoning is free text: the grammar is not fed
    row.advance(closed)
    assert row.masks and row.phase == "guided"
    row.advance(thinking.encode("yes")[0])
    assert row.matcher.is_accepting()
    started_by_the_template = asyncio.run(compiler.rows(choice, [*thinking.encode("Q:"), opened], 1))[0]
    assert started_by_the_template.phase == "thinking"


async def test_a_row_whose_matcher_breaks_fails_alone(tiny_engine: LocalEngine,
                                                      tokenizer: PreTrainedTokenizerBase) -> None:
    """A matcher in error (forced here by feeding it a token it refuses; it should never happen in a step) ends
    its own request with an error event; the unconstrained row beside it in the batch goes on."""
    row = (await tiny_engine.constraints().rows(Constraint("choice", '["yes"]'), [1], 1))[0]
    row.matcher.consume_token(tokenizer.encode(" no")[0])
    assert row.matcher.is_error()
    loop = asyncio.get_running_loop()
    failed = asyncio.Event()
    events: list[EngineEvent] = []

    def emit(event: EngineEvent) -> None:
        events.append(event)
        if isinstance(event, ErrorEvent):
            loop.call_soon_threadsafe(failed.set)

    broken = tiny_engine._sequence("broken", 0, [1, 2, 3], greedy(10), emit, row)
    healthy = asyncio.create_task(run(tiny_engine, prompt="x", sampling=greedy(10)))
    tiny_engine.scheduler.submit([broken])
    async with asyncio.timeout(60):
        await failed.wait()
    assert finish_of(await healthy).finish_reason in ("stop", "length")
    assert not [event for event in events if not isinstance(event, ErrorEvent)]
