"""Logprobs on the OpenAI endpoints (issue 17), with the official `openai` client against a real `llmws serve` of
the tiny chat model: chat's ``logprobs``/``top_logprobs`` and the legacy completions' ``logprobs: k``, streamed and
not, and the 400s OpenAI answers for a bad count."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.support.live import Account, LiveApi

MODEL = "tiny-chat"
QUESTION = [{"role": "user", "content": "Tell me about the sea."}]


@pytest.fixture(scope="module")
def account(live_api: LiveApi) -> Account:
    return live_api.new_account("logprobs")


@pytest.fixture(scope="module")
def client(live_api: LiveApi, account: Account) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_api.base_url}/v1", api_key=account.key, max_retries=0)


def chat(client: openai.OpenAI, **extra: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=16,
                                          **extra)  # type: ignore[call-overload]


def test_chat_logprobs_come_with_each_token_sorted_and_never_positive(client: openai.OpenAI) -> None:
    answer = chat(client, logprobs=True, top_logprobs=5)
    [choice] = answer.choices
    assert choice.logprobs is not None and choice.logprobs.content
    content = choice.logprobs.content
    assert len(content) <= answer.usage.completion_tokens
    for token in content:
        alternatives = [top.logprob for top in token.top_logprobs]
        assert len(alternatives) == 5 and alternatives == sorted(alternatives, reverse=True)
        assert token.logprob <= 0 and all(value <= 0 for value in alternatives)
        assert token.top_logprobs[0].token == token.token  # greedy: the chosen token is the likeliest
        assert token.logprob == pytest.approx(token.top_logprobs[0].logprob)
        assert token.bytes == list(token.token.encode()) or "\ufffd" in token.token
    # The tokens' bytes are the answer's exact UTF-8 (a random model may write bytes that are no UTF-8: U+FFFD).
    joined = b"".join(bytes(token.bytes or []) for token in content)
    assert joined.decode("utf-8", errors="replace") == choice.message.content


def test_chat_without_logprobs_answers_null_and_logprobs_alone_gives_no_alternatives(client: openai.OpenAI) -> None:
    assert chat(client).choices[0].logprobs is None
    content = chat(client, logprobs=True).choices[0].logprobs.content
    assert content and all(token.top_logprobs == [] for token in content)


def test_streamed_chat_logprobs_equal_the_whole_answers(client: openai.OpenAI) -> None:
    whole = chat(client, logprobs=True, top_logprobs=3).choices[0]
    chunks = list(chat(client, logprobs=True, top_logprobs=3, stream=True))
    streamed = [token for chunk in chunks if chunk.choices and chunk.choices[0].logprobs
                for token in chunk.choices[0].logprobs.content or []]
    for chunk in chunks:  # each content delta carries its own tokens' logprobs, nothing else does
        if chunk.choices and chunk.choices[0].delta.content:
            assert chunk.choices[0].logprobs is not None and chunk.choices[0].logprobs.content
            if "\ufffd" not in chunk.choices[0].delta.content:
                text = b"".join(bytes(token.bytes or []) for token in chunk.choices[0].logprobs.content)
                assert text.decode() == chunk.choices[0].delta.content
    assert [t.token for t in streamed] == [t.token for t in whole.logprobs.content]
    assert [t.logprob for t in streamed] == pytest.approx([t.logprob for t in whole.logprobs.content], abs=1e-5)
    assert [[a.token for a in t.top_logprobs] for t in streamed] == [[a.token for a in t.top_logprobs]
                                                                     for t in whole.logprobs.content]


def test_sampled_chat_logprobs_with_several_choices(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=1.0, seed=11, n=2,
                                            max_tokens=12, logprobs=True, top_logprobs=2)
    for choice in answer.choices:
        assert choice.logprobs is not None and choice.logprobs.content
        for token in choice.logprobs.content:
            assert token.logprob <= 0 and [a.logprob for a in token.top_logprobs] == sorted(
                (a.logprob for a in token.top_logprobs), reverse=True)
            assert token.logprob <= token.top_logprobs[0].logprob


def test_completions_logprobs_in_the_legacy_shape(client: openai.OpenAI) -> None:
    answer = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0,
                                       logprobs=3)
    [choice] = answer.choices
    logprobs = choice.logprobs
    assert logprobs is not None and logprobs.tokens and len(logprobs.tokens) == 8
    assert len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == len(logprobs.text_offset) == 8
    assert all(value <= 0 for value in logprobs.token_logprobs)
    for token, value, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert 1 <= len(top) <= 3 and max(top.values()) == pytest.approx(value)  # greedy: the chosen leads
        assert token in top
    assert logprobs.text_offset == sorted(logprobs.text_offset) and logprobs.text_offset[0] == 0
    if "\ufffd" not in choice.text:
        assert "".join(logprobs.tokens) == choice.text
        for token, offset in zip(logprobs.tokens, logprobs.text_offset, strict=True):
            assert choice.text[offset:offset + len(token)] == token

    chunks = list(client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0,
                                            logprobs=3, stream=True))
    streamed_tokens = [t for chunk in chunks if chunk.choices and chunk.choices[0].logprobs
                       for t in chunk.choices[0].logprobs.tokens or []]
    streamed_offsets = [o for chunk in chunks if chunk.choices and chunk.choices[0].logprobs
                        for o in chunk.choices[0].logprobs.text_offset or []]
    assert streamed_tokens == logprobs.tokens and streamed_offsets == logprobs.text_offset


@pytest.mark.parametrize(("endpoint", "fields", "param"), [
    ("chat", {"top_logprobs": 2}, "top_logprobs"),  # without logprobs: true, as OpenAI refuses it
    ("chat", {"logprobs": False, "top_logprobs": 0}, "top_logprobs"),
    ("chat", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("chat", {"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    ("chat", {"logprobs": 3}, "logprobs"),
    ("completions", {"logprobs": 21}, "logprobs"),
    ("completions", {"logprobs": -1}, "logprobs"),
    ("completions", {"logprobs": True}, "logprobs"),
])
def test_a_bad_logprobs_count_is_a_400_naming_the_field(client: openai.OpenAI, endpoint: str,
                                                        fields: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:  # extra_body: sent as is, whatever the client checks
        if endpoint == "chat":
            client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2, extra_body=fields)
        else:
            client.completions.create(model=MODEL, prompt="Once", max_tokens=2, extra_body=fields)
    assert refused.value.status_code == 400 and refused.value.param == param, refused.value.body
