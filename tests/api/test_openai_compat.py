"""Acceptance 1 of the HTTP API: the official `openai` client, sync and async, against a real `llmws serve`."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from tests.support.live import Account, LiveApi

MODEL = "tiny-chat"
QUESTION = [{"role": "user", "content": "Tell me about the sea."}]


@pytest.fixture(scope="module")
def account(live_api: LiveApi) -> Account:
    return live_api.new_account("openai")


@pytest.fixture(scope="module")
def client(live_api: LiveApi, account: Account) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_api.base_url}/v1", api_key=account.key, max_retries=0)


@pytest.fixture
def async_client(live_api: LiveApi, account: Account) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{live_api.base_url}/v1", api_key=account.key, max_retries=0)


def greedy(client: openai.OpenAI, max_tokens: int = 24, **extra: object) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=max_tokens,
                                          **extra)  # type: ignore[call-overload]


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [model.id for model in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found"


def test_chat_without_streaming(client: openai.OpenAI) -> None:
    answer = greedy(client)
    assert answer.id.startswith("chatcmpl-") and answer.object == "chat.completion" and answer.model == MODEL
    assert answer.created <= time.time() + 1
    [choice] = answer.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in {"stop", "length"}
    assert answer.usage is not None and answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert greedy(client).choices[0].message.content == choice.message.content  # greedy is deterministic


async def test_chat_stream_with_usage_matches_the_plain_answer(client: openai.OpenAI,
                                                               async_client: openai.AsyncOpenAI) -> None:
    plain = greedy(client)
    stream = await async_client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24,
                                                        stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert all(chunk.object == "chat.completion.chunk" and chunk.id == chunks[0].id for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == plain.choices[0].message.content
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage


def test_stop_sequence_ends_the_answer_before_it(client: openai.OpenAI) -> None:
    full = greedy(client, max_tokens=40).choices[0].message.content
    assert full and len(full) > 12
    stop = full[len(full) // 2:len(full) // 2 + 4]
    stopped = greedy(client, max_tokens=40, stop=[stop]).choices[0]
    assert stopped.message.content == full[:full.index(stop)]
    assert stopped.finish_reason == "stop"


def test_max_tokens_ends_with_length(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_completion_tokens=5)
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 5


def test_n_choices_and_seeded_sampling_reproduce(client: openai.OpenAI) -> None:
    def sample() -> list[str]:
        answer = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=1.0, seed=7, n=2,
                                                max_tokens=16)
        assert [choice.index for choice in answer.choices] == [0, 1]
        return [choice.message.content or "" for choice in answer.choices]

    first = sample()
    assert first == sample()
    assert first[0] != first[1]  # each choice samples on its own


def test_plain_completions(client: openai.OpenAI) -> None:
    answer = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6, temperature=0)
    assert answer.object == "text_completion" and answer.choices[0].text
    assert answer.choices[0].finish_reason == "length" and answer.usage and answer.usage.completion_tokens == 6


def test_refusals_the_client_understands(live_api: LiveApi, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-unknown", messages=QUESTION)
    assert unknown.value.code == "model_not_found" and unknown.value.param == "model"

    bad_key = openai.OpenAI(base_url=f"{live_api.base_url}/v1", api_key="sk-llmws-not-a-real-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.models.list()

    with pytest.raises(openai.BadRequestError) as hot:
        client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=5)
    assert hot.value.param == "temperature" and hot.value.status_code == 400
    with pytest.raises(openai.BadRequestError) as tiny_penalty:  # it would overflow the scores: a 400, not a 500
        client.chat.completions.create(model=MODEL, messages=QUESTION, extra_body={"repetition_penalty": 5e-324})
    assert tiny_penalty.value.param == "repetition_penalty"
    with pytest.raises(openai.BadRequestError) as empty:
        client.chat.completions.create(model=MODEL, messages=[])
    assert empty.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as tools:  # tools work (tests/api/test_tools.py); a bad choice not
        client.chat.completions.create(model=MODEL, messages=QUESTION, tools=[{"type": "function", "function": {
            "name": "f", "parameters": {"type": "object", "properties": {}}}}], tool_choice="sometimes")
    assert tools.value.param == "tool_choice"
    with pytest.raises(openai.BadRequestError) as long_prompt:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "sea " * 5000}])
    assert long_prompt.value.code == "context_length_exceeded"
    assert long_prompt.value.body["max_context"] <= 4096 < long_prompt.value.body["input_tokens"]  # type: ignore[index]


def test_a_client_that_goes_away_frees_its_slot_and_is_billed_as_cancelled(live_api: LiveApi) -> None:
    account = live_api.new_account("leaver")
    body = {"model": MODEL, "messages": QUESTION, "temperature": 0, "max_tokens": 3000, "stream": True}
    seen = 0
    with httpx.stream("POST", f"{live_api.base_url}/v1/chat/completions", json=body, headers=account.headers,
                      timeout=30) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                seen += 1
            if seen == 3:
                break
    assert live_api.wait_engine_idle(within_s=1.0) <= 1.0
    usage = live_api.usage_by_status(account, expect_requests=1)
    assert set(usage) == {"cancelled"} and usage["cancelled"]["requests"] == 1
    assert usage["cancelled"]["completion_tokens"] >= 3


async def test_usage_rows_add_up_to_what_clients_saw(live_api: LiveApi) -> None:
    account = live_api.new_account("counted")
    client = openai.AsyncOpenAI(base_url=f"{live_api.base_url}/v1", api_key=account.key, max_retries=0)
    limit = asyncio.Semaphore(8)

    async def one(index: int) -> int:
        async with limit:
            max_tokens, kind = 4 + index % 13, index % 5
            if kind == 0:
                answer = await client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=max_tokens,
                                                              temperature=0.8, seed=index)
                return answer.usage.total_tokens if answer.usage else -1
            if kind == 1:
                stream = await client.chat.completions.create(
                    model=MODEL, messages=QUESTION, max_tokens=max_tokens, stream=True, seed=index,
                    stream_options={"include_usage": True})
                usage = [chunk.usage async for chunk in stream if chunk.usage]
                return usage[0].total_tokens
            if kind == 2:
                answer = await client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=max_tokens,
                                                              n=2, seed=index)
                return answer.usage.total_tokens if answer.usage else -1
            if kind == 3:
                done = await client.completions.create(model=MODEL, prompt=f"Number {index}", max_tokens=max_tokens)
                return done.usage.total_tokens if done.usage else -1
            async with httpx.AsyncClient(timeout=60) as http:
                reply = await http.post(f"{live_api.base_url}/v1/chat", headers=account.headers,
                                        json={"message": f"Hello {index}", "max_tokens": max_tokens})
                return reply.json()["usage"]["total_tokens"]

    seen = await asyncio.gather(*(one(index) for index in range(50)))
    usage = await asyncio.to_thread(live_api.usage_by_status, account, expect_requests=50)
    assert set(usage) == {"ok"} and usage["ok"]["requests"] == 50
    assert usage["ok"]["total_tokens"] == sum(seen)
