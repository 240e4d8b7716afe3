"""OpenAI bodies read into the chat core's turn (parts, tool calls and results, tools, formats, logprobs), and
what the engine cannot do yet of a turn refused with a 400 naming the field."""

from __future__ import annotations

import pytest

from api.openai.schemas import ChatCompletionRequest, CompletionRequest
from api.openai.turns import chat_turn, completion_turn, message
from api.services.chat.generation import engine_request, refuse_unsupported
from api.services.chat.turn import (
    AudioPart,
    FilePart,
    ImagePart,
    Message,
    ResponseFormat,
    Sampling,
    TextPart,
    Tool,
    ToolCall,
    Turn,
)
from api.services.errors import InvalidInput
from engine.requests import SamplingParams

TOOL = {"type": "function", "function": {"name": "weather", "description": "Today's weather",
                                         "parameters": {"type": "object", "properties": {}}}}


def test_a_chat_body_becomes_a_turn_with_what_the_client_set() -> None:
    body = ChatCompletionRequest.model_validate({
        "model": "m", "messages": [{"role": "developer", "content": "Be brief."},
                                   {"role": "user", "content": [{"type": "text", "text": "Hi"}], "name": "ann"}],
        "temperature": 0, "max_completion_tokens": 9, "max_tokens": 50, "stop": "END", "tools": [TOOL],
        "tool_choice": "auto",
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        "logprobs": True, "top_logprobs": 2})
    turn = chat_turn(body)
    assert turn.messages == (Message.of("system", "Be brief."), Message("user", (TextPart("Hi"),), name="ann"))
    assert turn.tools == (Tool("weather", "Today's weather", {"type": "object", "properties": {}}),)
    assert turn.tool_choice == "auto"
    assert turn.response_format == ResponseFormat("json_schema", {"name": "x", "schema": {"type": "object"}})
    assert turn.logprobs and turn.top_logprobs == 2
    assert turn.sampling.temperature == 0 and turn.sampling.max_tokens == 9 and turn.sampling.stop == ("END",)
    assert turn.sampling.top_p is None  # unset: the alias, the model or the server decides


def test_messages_carry_parts_tool_calls_and_tool_results() -> None:
    assistant = message({"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]})
    assert assistant == Message("assistant", (), tool_calls=(ToolCall("call_1", "weather", '{"city":"Oslo"}'),))
    result = message({"role": "tool", "tool_call_id": "call_1", "content": "sunny"})
    assert result == Message("tool", (TextPart("sunny"),), tool_call_id="call_1")
    parts = message({"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.org/a.png", "detail": "low"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-1", "filename": "a.pdf"}}]}).parts
    assert parts == (TextPart("what is this?"), ImagePart("https://example.org/a.png", "low"),
                     AudioPart("UklGRg==", "wav"), FilePart("file-1", None, "a.pdf"))


def test_a_completion_body_is_a_plain_prompt() -> None:
    turn = completion_turn(CompletionRequest.model_validate({"model": "m", "prompt": ["Once"], "logprobs": 0}))
    assert turn.prompt == "Once" and turn.messages == () and turn.logprobs and turn.top_logprobs == 0
    with pytest.raises(InvalidInput) as two:
        completion_turn(CompletionRequest.model_validate({"model": "m", "prompt": ["a", "b"]}))
    assert two.value.param == "prompt"


def test_what_a_turn_cannot_describe_is_refused_by_the_adapter() -> None:
    with pytest.raises(InvalidInput) as refused:
        chat_turn(ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                                        "logit_bias": {"1": 5}}))
    assert refused.value.param == "logit_bias" and refused.value.code == "unsupported_parameter"
    with pytest.raises(InvalidInput) as not_a_list:
        chat_turn(ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                                        "tools": "weather"}))
    assert not_a_list.value.param == "tools"


HELLO = (Message.of("user", "hello"),)


@pytest.mark.parametrize(("turn", "param"), [
    (Turn(prompt="hello", tools=(Tool("weather"),)), "tools"),
    (Turn((*HELLO, Message("user", (TextPart("see"), ImagePart("https://example.org/a.png"))))),
     "messages[1].content[1]"),
])
def test_the_engine_refuses_what_it_cannot_do_yet_naming_the_field(turn: Turn, param: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        refuse_unsupported(turn)
    assert refused.value.param == param and refused.value.code == "unsupported_parameter"


def test_a_message_without_content_or_tool_calls_is_refused() -> None:
    with pytest.raises(InvalidInput) as refused:
        refuse_unsupported(Turn((*HELLO, Message("user", ()))))
    assert refused.value.param == "messages[1].content" and refused.value.code == "missing_field"


def test_a_part_of_a_type_no_turn_describes_is_refused_naming_it() -> None:
    with pytest.raises(InvalidInput) as refused:
        message({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "video_url"}]}, 3)
    assert refused.value.param == "messages[3].content[1]" and refused.value.code == "unsupported_parameter"


def test_a_plain_text_turn_is_the_engines_request() -> None:
    turn = Turn(HELLO, response_format=ResponseFormat("text"), sampling=Sampling(temperature=0))
    refuse_unsupported(turn)  # plain text is what the engine writes anyway
    params = SamplingParams(temperature=0)
    request = engine_request(turn, params, "r-1")
    assert request.messages == [{"role": "user", "content": "hello"}] and request.sampling == params
    assert engine_request(Turn(prompt="Once"), params, "r-2").prompt == "Once"


def test_logprobs_counts_are_checked_as_openai_checks_them() -> None:
    def chat(**fields: object) -> Turn:
        return chat_turn(ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "x"}], **fields}))

    assert chat(logprobs=True).top_logprobs is None and chat(logprobs=True).logprobs
    assert not chat(logprobs=False).logprobs
    for fields, param in [({"top_logprobs": 1}, "top_logprobs"), ({"logprobs": True, "top_logprobs": 21},
                                                                 "top_logprobs"),
                          ({"logprobs": "yes"}, "logprobs"), ({"logprobs": True, "top_logprobs": 2.5},
                                                              "top_logprobs")]:
        with pytest.raises(InvalidInput) as refused:
            chat(**fields)
        assert refused.value.param == param, fields
    with pytest.raises(InvalidInput) as too_many:
        completion_turn(CompletionRequest.model_validate({"model": "m", "prompt": "a", "logprobs": 21}))
    assert too_many.value.param == "logprobs"
    assert not completion_turn(CompletionRequest.model_validate({"model": "m", "prompt": "a"})).logprobs
