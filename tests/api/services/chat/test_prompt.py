"""Prompt assembly and trimming, once for every protocol: which system prompt, in what order, and the oldest
exchanges dropped (counted once, whole exchanges) until the prompt fits the context."""

from __future__ import annotations

import pytest

from api.services.chat.prompt import (
    Prompt,
    counted_text,
    fitted,
    oldest_to_drop,
    system_prompt,
    template_messages,
    with_system_prompt,
)
from api.services.chat.turn import ImagePart, Message, TextPart, ToolCall
from engine.errors import ContextTooLong

MARKERS = 3  # the fake template's tokens around each message


class WordCounter:
    """A tokenizer of words, templating each message with a few marker tokens; it counts how often it is used."""

    def __init__(self) -> None:
        self.calls = 0

    def count_tokens(self, texts: list[str]) -> list[int]:
        self.calls += 1
        return [len(text.split()) for text in texts]

    def encode_messages(self, messages: list[dict[str, str]]) -> list[int]:
        self.calls += 1
        return [0] * sum(len(m["content"].split()) + MARKERS for m in messages)


def history(exchanges: int) -> list[Message]:
    return [message for turn in range(exchanges) for message in (
        Message.of("user", f"question {turn} " + "more " * turn), Message.of("assistant", f"answer {turn}"))]


def test_the_most_specific_system_prompt_wins() -> None:
    assert system_prompt("request", "conversation", "project") == "request"
    assert system_prompt(None, "", "project") == "project"
    assert system_prompt(None, None, None) is None


def test_a_prompt_is_the_system_prompt_then_history_then_the_new_turn() -> None:
    new = [Message.of("user", "now")]
    prompt = Prompt.assemble("Be brief.", history(1), new)
    assert template_messages(prompt.messages) == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "question 0 "},
        {"role": "assistant", "content": "answer 0"}, {"role": "user", "content": "now"}]
    assert Prompt.assemble(None, [], new).messages == tuple(new)


def test_a_default_system_prompt_never_replaces_the_callers_own() -> None:
    own = (Message.of("system", "mine"), Message.of("user", "hi"))
    assert with_system_prompt(own, "alias's") == own
    assert with_system_prompt(own[1:], "alias's") == (Message.of("system", "alias's"), own[1])


def test_a_message_is_a_list_of_parts_and_text_models_see_its_text() -> None:
    message = Message("user", (TextPart("look at "), ImagePart("data:image/png;base64,AAAA"), TextPart("this")))
    assert message.text == "look at this" and not message.text_only
    assert Message.of("user", "plain").text_only


def test_whole_exchanges_go_until_enough_tokens_are_freed() -> None:
    pairs = ["user", "assistant"] * 3
    assert oldest_to_drop([5, 5, 5, 5, 5, 5], 1, pairs) == 2  # at least one exchange
    assert oldest_to_drop([5, 5, 5, 5, 5, 5], 11, pairs) == 4
    assert oldest_to_drop([5, 5, 5], 100, pairs[:3]) == 3  # never past the history


def test_an_exchange_with_tool_calls_goes_whole_so_no_result_loses_its_call() -> None:
    roles = ["user", "assistant", "tool", "tool", "assistant", "user", "assistant"]
    assert oldest_to_drop([5] * 7, 1, roles) == 5  # the call, both results and the answer go with their question
    assert oldest_to_drop([5] * 7, 26, roles) == 7


def test_tool_calls_count_toward_a_messages_cost() -> None:
    call = Message("assistant", (), tool_calls=(ToolCall("call_1", "add", '{"a": 1, "b": 2}'),))
    assert counted_text(call) == 'add{"a": 1, "b": 2}' and counted_text(Message.of("user", "hi")) == "hi"


async def test_trimming_keeps_the_newest_history_that_fits_counting_each_message_once() -> None:
    counter, max_context = WordCounter(), 120
    prompt = Prompt.assemble("sys", history(12), [Message.of("user", "and now?")])
    tried: list[int] = []

    async def start(candidate: Prompt) -> Prompt:
        tokens = len(counter.encode_messages(template_messages(candidate.messages)))
        tried.append(len(candidate.history))
        if tokens >= max_context:
            raise ContextTooLong(tokens, max_context)
        return candidate

    counter.calls = 0
    kept = await fitted(prompt, start, counter)
    fitting = [dropped for dropped in range(0, 25, 2) if len(counter.encode_messages(template_messages(
        prompt.without_oldest(dropped).messages))) < max_context]
    assert kept.history == prompt.history[fitting[0]:] and kept.head == prompt.head and kept.new == prompt.new
    assert 0 < fitting[0] < 24
    assert len(tried) <= 3  # counted once, not once per dropped exchange


async def test_a_new_turn_that_alone_does_not_fit_is_refused() -> None:
    async def start(candidate: Prompt) -> Prompt:
        raise ContextTooLong(500, 100)

    with pytest.raises(ContextTooLong):
        await fitted(Prompt.assemble(None, history(2), [Message.of("user", "x " * 500)]), start, WordCounter())


async def test_without_a_model_to_count_with_the_history_goes() -> None:
    async def start(candidate: Prompt) -> Prompt:
        if candidate.history:
            raise ContextTooLong(200, 100)
        return candidate

    kept = await fitted(Prompt.assemble(None, history(3), [Message.of("user", "hi")]), start, None)
    assert kept.history == ()
