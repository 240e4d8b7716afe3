"""Tools through a real server and the official `openai` client (issue 17, acceptance 2 and 3): ``tool_choice``
"required" and a named function always well-formed on the tiny random model (only the grammar can make a call
valid there), the stream's argument pieces equal to the whole answer's for the same seed, parallel calls; and a
full agent loop (call, tool result, answer) with the `openai` client and LangChain, on the local engine and through
an alias of it."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import jsonschema
import openai
import pytest

from tests.support.gateway import add_alias, add_provider
from tests.support.live import Account, LiveApi
from tests.support.schemas import TOOL_SCHEMAS, WEATHER_ARGUMENTS
from tests.support.schemas import TOOLS as SHARED_TOOLS

TINY = "tiny-chat"
AT_ONCE = 16  # a user's generations at once (the server's default limit)
TOOLS = list(SHARED_TOOLS)
SCHEMAS = TOOL_SCHEMAS
ASK = [{"role": "user", "content": "What is the weather in Paris? And what is 2 + 3?"}]
NAMED = {"type": "function", "function": {"name": "add"}}


@pytest.fixture(scope="module")
def account(live_api: LiveApi) -> Account:
    return live_api.new_account("tools")


@pytest.fixture(scope="module")
def client(live_api: LiveApi, account: Account) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_api.base_url}/v1", api_key=account.key, max_retries=0, timeout=120)


def ask(client: openai.OpenAI, seed: int, tool_choice: Any, **extra: Any) -> Any:
    return client.chat.completions.create(model=extra.pop("model", TINY), messages=extra.pop("messages", ASK),
                                          tools=TOOLS, tool_choice=tool_choice, temperature=1, seed=seed,
                                          max_tokens=extra.pop("max_tokens", 120), **extra)


def streamed(client: openai.OpenAI, seed: int, tool_choice: Any) -> tuple[str, list[dict[str, str]], str]:
    """The content, the calls (from their deltas) and the finish reason of a streamed answer."""
    content, calls, finish = "", [], ""
    for chunk in ask(client, seed, tool_choice, stream=True, parallel_tool_calls=False):
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for delta in choice.delta.tool_calls or []:
            if delta.id is not None:  # a call's first delta: index, id, type, name and arguments ""
                assert delta.index == len(calls) and delta.type == "function" and delta.function.arguments == ""
                calls.append({"id": delta.id, "name": delta.function.name, "arguments": ""})
            else:
                assert delta.function.name is None
            calls[delta.index]["arguments"] += delta.function.arguments or ""
        finish = choice.finish_reason or finish
    return content, calls, finish


@pytest.mark.parametrize("tool_choice", ["required", NAMED], ids=["required", "named"])
def test_100_sampled_calls_name_an_offered_tool_and_validate(client: openai.OpenAI, tool_choice: Any) -> None:
    """One call each (a random model allowed several repeats them until max_tokens: test_parallel_tool_calls)."""
    with ThreadPoolExecutor(AT_ONCE) as pool:
        answers = list(pool.map(lambda seed: ask(client, seed, tool_choice, parallel_tool_calls=False), range(100)))
    for seed, answer in enumerate(answers):
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls", (seed, choice)
        assert choice.message.content is None
        for call in choice.message.tool_calls:
            assert call.type == "function" and call.id.startswith("call_") and len(call.id) == 29
            assert call.function.name in SCHEMAS and (tool_choice == "required" or call.function.name == "add")
            jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
        assert answer.usage.completion_tokens > 0


@pytest.mark.parametrize("tool_choice", ["required", NAMED], ids=["required", "named"])
def test_streamed_arguments_concatenate_to_the_whole_answers(client: openai.OpenAI, tool_choice: Any) -> None:
    seeds = range(16)
    with ThreadPoolExecutor(AT_ONCE) as pool:
        whole = list(pool.map(lambda seed: ask(client, seed, tool_choice, parallel_tool_calls=False), seeds))
        parts = list(pool.map(lambda seed: streamed(client, seed, tool_choice), seeds))
    for answer, (content, calls, finish) in zip(whole, parts, strict=True):
        assert content == "" and finish == "tool_calls"
        assert [(c["name"], c["arguments"]) for c in calls] == [
            (call.function.name, call.function.arguments) for call in answer.choices[0].message.tool_calls]


def test_parallel_tool_calls(client: openai.OpenAI) -> None:
    """The random model makes several calls for some seeds (the grammar allows one or more); with
    parallel_tool_calls false it makes exactly one."""
    with ThreadPoolExecutor(AT_ONCE) as pool:
        several = list(pool.map(lambda seed: ask(client, seed, "required", max_tokens=200), range(32)))
        single = list(pool.map(lambda seed: ask(client, seed, "required", parallel_tool_calls=False), range(16)))
    counts = [len(answer.choices[0].message.tool_calls or []) for answer in several]
    assert max(counts) >= 2, counts
    for answer in several:  # every call but one cut short by max_tokens validates
        choice = answer.choices[0]
        done = choice.message.tool_calls if choice.finish_reason == "tool_calls" else choice.message.tool_calls[:-1]
        for call in done:
            jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    assert all(len(answer.choices[0].message.tool_calls) == 1 for answer in single)


def test_tool_choice_none_makes_no_call_and_a_bad_name_is_a_400(client: openai.OpenAI) -> None:
    answer = ask(client, 1, "none", max_tokens=8)
    assert not answer.choices[0].message.tool_calls and answer.choices[0].finish_reason != "tool_calls"
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, 1, {"type": "function", "function": {"name": "missing"}})
    assert refused.value.body["param"] == "tool_choice"  # type: ignore[index]


def weather(city: str, unit: str) -> str:
    return json.dumps({"city": city, "temperature": 21, "unit": unit})


def run_agent(client: openai.OpenAI, model: str) -> tuple[Any, Any]:
    """The loop every agent runs: the model calls a tool, the tool's result goes back, the model answers. One call
    (greedy, the random model would repeat calls until max_tokens where several are allowed)."""
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model=model, messages=messages, tools=TOOLS[:1], tool_choice="required",
                                           parallel_tool_calls=False, temperature=0, max_tokens=80)
    call = first.choices[0].message.tool_calls[0]
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    result = weather(**json.loads(call.function.arguments))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    final = client.chat.completions.create(model=model, messages=messages, tools=TOOLS[:1], tool_choice="none",
                                           temperature=0, max_tokens=40)
    return first, final


@pytest.fixture(scope="module")
def alias(live_api: LiveApi, account: Account) -> str:
    """A gateway alias whose provider is this same server's /v1, serving the tiny model."""
    provider = add_provider(live_api, f"{live_api.base_url}/v1", api_key=account.key, timeout_s=60)
    return add_alias(live_api, [{"provider_id": provider["id"], "upstream_model": TINY}])


@pytest.mark.parametrize("through", ["local", "alias"])
def test_agent_loop_with_the_openai_client(client: openai.OpenAI, alias: str, through: str) -> None:
    first, final = run_agent(client, TINY if through == "local" else alias)
    assert first.choices[0].finish_reason == "tool_calls"
    jsonschema.validate(json.loads(first.choices[0].message.tool_calls[0].function.arguments), WEATHER_ARGUMENTS)
    assert final.choices[0].finish_reason in ("stop", "length")
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls


@pytest.mark.parametrize("through", ["local", "alias"])
def test_agent_loop_with_langchain_bind_tools(live_api: LiveApi, account: Account, alias: str, through: str) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: Literal["Paris", "Oslo"], unit: Literal["c", "f"]) -> str:
        """The weather in a city."""
        return weather(city, unit)

    chat = ChatOpenAI(model=TINY if through == "local" else alias, base_url=f"{live_api.base_url}/v1",
                      api_key=account.key, temperature=0, max_tokens=80, max_retries=0, timeout=120)
    messages: list[Any] = [HumanMessage("What is the weather in Paris?")]
    called = chat.bind_tools([get_weather], tool_choice="get_weather", parallel_tool_calls=False).invoke(messages)
    assert called.tool_calls and called.tool_calls[0]["name"] == "get_weather"
    assert set(called.tool_calls[0]["args"]) == {"city", "unit"}
    messages += [called, ToolMessage(get_weather.invoke(called.tool_calls[0]["args"]),
                                     tool_call_id=called.tool_calls[0]["id"])]
    answer = chat.bind_tools([get_weather], tool_choice="none").invoke(messages)
    assert isinstance(answer.content, str) and answer.content and not answer.tool_calls
