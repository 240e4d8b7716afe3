"""Tool calls (engine/tool_format.py, engine/tool_calls.py, engine/tool_output.py): each family's parser on fixed
texts, the stream split at every position equal to the one-shot parse, the fallback prompt, and the grammar-held
calls on the real engine (a tiny random-weight model, where only the grammar can make a call well-formed)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema
import pytest
from transformers import PreTrainedTokenizerBase

from engine.errors import InvalidParameters
from engine.local import LocalEngine
from engine.requests import EngineEvent, SamplingParams, TokenEvent, ToolCallDelta
from engine.tool_calls import ToolCallParser, new_call_id
from engine.tool_format import ToolFormat, call_grammar, fallback_messages, family_of, template_supports_tools
from tests.engine.conftest import finish_of, run, text_of, tiny_engine_on
from tests.model_fixtures import tiny_llama
from tests.support.schemas import TOOL_SCHEMAS, TOOLS

SCHEMAS = TOOL_SCHEMAS

# (family, model text, content, [(name, arguments)])
CASES = [
    ("hermes", 'Let me look.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n'
               '</tool_call>', "Let me look.", [("get_weather", '{"city": "Paris", "unit": "c"}')]),
    ("hermes", '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n<tool_call>\n'
               '{"arguments": {"a": 3, "b": 4}, "name": "add"}\n</tool_call>',
     "", [("add", '{"a": 1, "b": 2}'), ("add", '{"a": 3, "b": 4}')]),
    ("hermes", 'A brace } and "<tool" but no call <tool_', 'A brace } and "<tool" but no call <tool_', []),
    ("hermes", '<tool_call>{"name": "f", "arguments": {"s": "a \\"}\\" </tool_call> b"}}</tool_call>', "",
     [("f", '{"s": "a \\"}\\" </tool_call> b"}')]),
    ("llama3", '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "f"}}', "",
     [("get_weather", '{"city": "Oslo", "unit": "f"}')]),
    ("llama3", '{"name": "add", "parameters": {"a": 1, "b": 2}}; {"name": "add", "parameters": {"a": 5, "b": 6}}',
     "", [("add", '{"a": 1, "b": 2}'), ("add", '{"a": 5, "b": 6}')]),
    ("llama3", "The answer is 4.", "The answer is 4.", []),
    ("llama3", "<|python_tag|>brave_search.call(query=\"Oslo\")", "brave_search.call(query=\"Oslo\")", []),
    ("llama3", '{"answer": 4}', '{"answer": 4}', []),
    ("mistral", '[TOOL_CALLS][{"name": "add", "arguments": {"a": 1, "b": 2}}, {"name": "get_weather", '
                '"arguments": {"city": "Rome", "unit": "c"}}]', "",
     [("add", '{"a": 1, "b": 2}'), ("get_weather", '{"city": "Rome", "unit": "c"}')]),
    ("mistral", "No tools [TOOL needed.", "No tools [TOOL needed.", []),
    ("json", '[{"name": "add", "arguments": {"a": 1, "b": 2}}]', "", [("add", '{"a": 1, "b": 2}')]),
    ("json", '  {"name": "add", "parameters": {"a": 7, "b": 8}}', "", [("add", '{"a": 7, "b": 8}')]),
    ("json", "Plain text.", "Plain text.", []),
]


def stream(family: str, pieces: list[str], parallel: bool = True) -> tuple[str, list[dict[str, Any]]]:
    """The content and the calls (id, name, concatenated arguments) a parser sends for the text in ``pieces``."""
    parser = ToolCallParser(family, parallel=parallel)  # type: ignore[arg-type]
    content, calls = "", []
    for position, piece in enumerate([*pieces, ""]):
        text, deltas = parser.feed(piece, final=position == len(pieces))
        content += text
        for index, call_id, name, arguments in deltas:
            if call_id is not None:
                assert index == len(calls) and name is not None
                calls.append({"id": call_id, "name": name, "arguments": ""})
            else:
                assert call_id is None and name is None
            calls[index]["arguments"] += arguments
    return content, calls


@pytest.mark.parametrize(("family", "text", "content", "calls"), CASES)
def test_each_family_parses_its_fixed_texts(family: str, text: str, content: str, calls: list[tuple[str, str]]
                                            ) -> None:
    got_content, got_calls = stream(family, [text])
    assert got_content == content
    assert [(call["name"], call["arguments"]) for call in got_calls] == calls
    for call in got_calls:
        json.loads(call["arguments"])
        assert call["id"].startswith("call_") and len(call["id"]) == 29


@pytest.mark.parametrize(("family", "text", "content", "calls"), CASES)
def test_a_stream_split_anywhere_equals_the_one_shot_parse(family: str, text: str, content: str,
                                                           calls: list[tuple[str, str]]) -> None:
    for cut in range(len(text) + 1):
        for second in (cut, min(len(text), cut + 3)):
            got_content, got_calls = stream(family, [text[:cut], text[cut:second], text[second:]])
            assert got_content == content, (cut, second)
            assert [(call["name"], call["arguments"]) for call in got_calls] == calls, (cut, second)
    # one character at a time: no markup ever reaches the content
    got_content, _ = stream(family, list(text))
    assert got_content == content


def test_parallel_false_keeps_only_the_first_call() -> None:
    _, calls = stream("hermes", [CASES[1][1]], parallel=False)
    assert [call["name"] for call in calls] == ["add"]


def test_the_family_is_read_off_the_template() -> None:
    assert family_of("{% for tool in tools %}<tool_call>{% endfor %}") == "hermes"
    assert family_of("{% if tools %}[TOOL_CALLS]{% endif %}") == "mistral"
    assert family_of("{% if tools %}<|python_tag|>{% endif %}") == "llama3"
    assert family_of("{% if tools %}{{ tools | tojson }}{% endif %}") == "json"
    assert family_of("{{ messages }}") == "hermes"  # no tool support: the fallback prompt asks for Hermes calls
    assert family_of(None) == "hermes"
    assert not template_supports_tools("{% for m in messages %}{{ m.content }}{% endfor %}")
    assert len({new_call_id() for _ in range(100)}) == 100


def test_the_fallback_prompt_describes_tools_and_renders_calls_and_results() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "21 degrees"}]
    rendered = fallback_messages(messages, TOOLS)
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "user"]
    assert rendered[0]["content"].startswith("Be brief.\n\n") and '"name": "get_weather"' in rendered[0]["content"]
    assert "<tools>" in rendered[0]["content"] and "<tool_call>" in rendered[0]["content"]
    assert rendered[2]["content"] == ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", '
                                      '"unit": "c"}}\n</tool_call>')
    assert rendered[3]["content"] == "<tool_response>\n21 degrees\n</tool_response>"
    # what the model has written out in the fallback's format, the Hermes parser reads back
    _, calls = stream("hermes", [rendered[2]["content"]])
    assert calls[0]["name"] == "get_weather"


def test_the_demo_template_gets_the_fallback_prompt(tiny_engine: LocalEngine,
                                                    tokenizer: PreTrainedTokenizerBase) -> None:
    assert tiny_engine.tool_format == ToolFormat(family="hermes", native=False)
    ids = tiny_engine.encode_messages([{"role": "user", "content": "Weather?"}], list(TOOLS))
    prompt = tokenizer.decode(ids)
    assert "<tools>" in prompt and '"name": "add"' in prompt and prompt.rstrip().endswith("assistant")


def calls_of(events: list[EngineEvent], index: int = 0) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    for event in events:
        if isinstance(event, ToolCallDelta) and event.index == index:
            if event.id is not None:
                calls.append({"id": event.id, "name": event.name, "arguments": ""})
            calls[event.call_index]["arguments"] += event.arguments
    return calls


MESSAGES = [{"role": "user", "content": "What is the weather in Paris, and what is 2 + 3?"}]


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "add"}}],
                         ids=["required", "named"])
async def test_required_and_named_calls_are_always_well_formed(tiny_engine: LocalEngine, tool_choice: Any
                                                               ) -> None:
    results = await asyncio.gather(*(run(tiny_engine, messages=MESSAGES, tools=TOOLS, tool_choice=tool_choice,
                                         sampling=SamplingParams(temperature=1, seed=seed, max_tokens=120))
                                     for seed in range(24)))
    for seed, events in enumerate(results):
        calls = calls_of(events)
        assert calls, (seed, text_of(events))
        assert finish_of(events).finish_reason in ("tool_calls", "length")
        if finish_of(events).finish_reason == "tool_calls":
            assert text_of(events) == ""  # no markup in the content
            for call in calls:
                assert isinstance(tool_choice, str) or call["name"] == "add"
                jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])
        # every token is accounted for: the events' ids are the finish's output ids (less the end token)
        ids = tuple(t for e in events if isinstance(e, (TokenEvent, ToolCallDelta)) for t in e.token_ids)
        output = finish_of(events).output_ids
        assert output[:len(ids)] == ids and len(output) - len(ids) <= 1


async def test_parallel_tool_calls_false_gives_one_call(tiny_engine: LocalEngine) -> None:
    results = await asyncio.gather(*(run(tiny_engine, messages=MESSAGES, tools=TOOLS, tool_choice="required",
                                         parallel_tool_calls=False,
                                         sampling=SamplingParams(temperature=1, seed=seed, max_tokens=120))
                                     for seed in range(8)))
    for events in results:
        assert len(calls_of(events)) == 1


@pytest.mark.parametrize("special", [False, True], ids=["added-token", "special-token"])
async def test_a_marker_that_is_one_token_of_the_vocabulary_still_makes_a_call(
        tokenizer: PreTrainedTokenizerBase, special: bool) -> None:
    """Qwen's vocabulary has ``<tool_call>`` as one added token, and some fine-tunes have it (as Mistral has
    ``[TOOL_CALLS]``) as a special token, which decoding leaves out of the text: the grammar takes the single
    token for the marker, and the call is read back either way, no markup in the content."""
    vocabulary = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    vocabulary.add_tokens(["<tool_call>", "</tool_call>"], special_tokens=special)
    opened = vocabulary.convert_tokens_to_ids("<tool_call>")
    engine = tiny_engine_on(tiny_llama(vocabulary, seed=99, context=512), vocabulary)
    try:
        results = await asyncio.gather(*(run(engine, messages=MESSAGES, tools=TOOLS, tool_choice="required",
                                             parallel_tool_calls=False,
                                             sampling=SamplingParams(temperature=1, seed=seed, max_tokens=120))
                                         for seed in range(6)))
    finally:
        engine.close()
    for seed, events in enumerate(results):
        finish = finish_of(events)
        assert finish.finish_reason == "tool_calls" and opened in finish.output_ids, (seed, text_of(events))
        [call] = calls_of(events)
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])
        assert text_of(events) == ""


async def test_tool_choice_none_and_bad_names(tiny_engine: LocalEngine) -> None:
    events = await run(tiny_engine, messages=MESSAGES, tools=TOOLS, tool_choice="none",
                       sampling=SamplingParams(temperature=0, max_tokens=8))
    assert not calls_of(events) and finish_of(events).finish_reason != "tool_calls"
    with pytest.raises(InvalidParameters) as refused:
        await run(tiny_engine, messages=MESSAGES, tools=TOOLS,
                  tool_choice={"type": "function", "function": {"name": "nope"}})
    assert refused.value.param == "tool_choice"


def test_call_grammars_compile_for_every_family(tiny_engine: LocalEngine) -> None:
    from engine.requests import Constraint
    for family in ("hermes", "llama3", "mistral", "json"):
        for parallel in (True, False):
            grammar = call_grammar(family, TOOLS, only=None, parallel=parallel)  # type: ignore[arg-type]
            tiny_engine.constraints().compile(Constraint("grammar", grammar, "tools"))
