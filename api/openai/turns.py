"""OpenAI request bodies read into the chat core's `Turn`: messages with their parts, tool calls and results,
tools, tool choice, response format, sampling and logprobs. What a turn cannot describe (legacy ``functions``,
``logit_bias``, audio output, predictions, web search) is refused here with a 400 naming the field; what the
engine cannot do yet of what a turn describes is refused by the core (``api/services/chat/generation.py``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from api.openai import structured_outputs
from api.openai.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from api.services.chat import tool_offers
from api.services.chat.turn import (
    AudioPart,
    FilePart,
    ImagePart,
    Message,
    Part,
    Sampling,
    TextPart,
    ToolCall,
    Turn,
)
from api.services.errors import InvalidInput

OUTSIDE_A_CHAT_TURN = ("functions", "function_call", "logit_bias", "audio", "modalities", "prediction",
                       "web_search_options")
OUTSIDE_A_COMPLETION_TURN = ("echo", "suffix", "best_of", "logit_bias")
MAX_TOP_LOGPROBS = 20  # OpenAI's limit for chat, and vLLM's default --max-logprobs for both endpoints


def refuse(body: SamplingFields, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(body, name, None)
        if value is not None and value is not False:
            raise InvalidInput(f"'{name}' is not supported by this server yet", param=name,
                               code="unsupported_parameter")


def sampling(body: SamplingFields, max_tokens: int | None) -> Sampling:
    """What the body set: OpenAI's fields, and the extensions vLLM takes too (``top_k``, ``repetition_penalty``).
    The penalties are 0 when not sent, which is also every layer's default."""
    return Sampling(temperature=body.temperature, top_p=body.top_p, top_k=body.top_k or None, max_tokens=max_tokens,
                    stop=body.stop_strings() or None, seed=body.seed, n=body.n,
                    repetition_penalty=body.repetition_penalty, presence_penalty=body.presence_penalty,
                    frequency_penalty=body.frequency_penalty)


def chat_turn(body: ChatCompletionRequest) -> Turn:
    refuse(body, OUTSIDE_A_CHAT_TURN)
    options = tool_offers.options(body.tools, body.tool_choice, body.parallel_tool_calls,
                                  structured_outputs.response_format(body))
    return replace(
        options, messages=tuple(message(item.model_dump(mode="json", exclude_none=True), index)
                                for index, item in enumerate(body.messages)),
        sampling=sampling(body, body.max_completion_tokens or body.max_tokens),
        logprobs=body.logprobs is True, top_logprobs=chat_top_logprobs(body))


def completion_turn(body: CompletionRequest) -> Turn:
    refuse(body, OUTSIDE_A_COMPLETION_TURN)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise InvalidInput("send one prompt per request", param="prompt", code="invalid_value")
    # A completion's logprobs is how many alternatives per token (0 too: the chosen token's own).
    top = count_of_logprobs(body.logprobs, "logprobs")
    return Turn(prompt=prompts[0], sampling=sampling(body, body.max_tokens),
                response_format=structured_outputs.response_format(body), logprobs=top is not None,
                top_logprobs=top)


def chat_top_logprobs(body: ChatCompletionRequest) -> int | None:
    """A chat body's ``top_logprobs``, checked as OpenAI checks it: a count in 0..20, and only beside
    ``logprobs: true``."""
    if body.logprobs is not None and not isinstance(body.logprobs, bool):
        raise InvalidInput("logprobs must be true or false", param="logprobs")
    top = count_of_logprobs(body.top_logprobs, "top_logprobs")
    if top is not None and body.logprobs is not True:
        raise InvalidInput("top_logprobs needs logprobs set to true", param="top_logprobs")
    return top


def count_of_logprobs(value: Any, param: str) -> int | None:
    """How many alternatives with each token (``top_logprobs`` of chat, ``logprobs`` of a completion)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{param} must be an integer from 0 to {MAX_TOP_LOGPROBS}", param=param)
    if not 0 <= value <= MAX_TOP_LOGPROBS:
        raise InvalidInput(f"{param} must be from 0 to {MAX_TOP_LOGPROBS}, not {value}", param=param)
    return value


def message(item: dict[str, Any], index: int = 0) -> Message:
    """One message as OpenAI's wire has it (``developer`` is a system prompt by another name); ``index`` is its
    place in ``messages``, for naming a part of a type no turn describes."""
    role = "system" if item["role"] == "developer" else item["role"]
    content = item.get("content")
    parts: tuple[Part, ...] = (
        () if content is None else (TextPart(content),) if isinstance(content, str)
        else tuple(part(entry, f"messages[{index}].content[{j}]") for j, entry in enumerate(content)))
    calls = tuple(ToolCall(call.get("id", ""), call.get("function", {}).get("name", ""),
                           call.get("function", {}).get("arguments", ""))
                  for call in item.get("tool_calls") or ())
    return Message(role, parts, name=item.get("name"), tool_calls=calls, tool_call_id=item.get("tool_call_id"))


def part(entry: dict[str, Any], param: str) -> Part:
    kind = entry.get("type")
    if kind == "text":
        return TextPart(entry.get("text") or "")
    if kind == "image_url":
        image = entry.get("image_url") or {}
        return ImagePart(image.get("url", ""), image.get("detail"))
    if kind == "input_audio":
        audio = entry.get("input_audio") or {}
        return AudioPart(audio.get("data", ""), audio.get("format", ""))
    if kind == "file":
        file = entry.get("file") or {}
        return FilePart(file.get("file_id"), file.get("file_data"), file.get("filename"))
    raise InvalidInput(f"content parts of type {kind!r} are not supported by this server yet", param=param,
                       code="unsupported_parameter")
