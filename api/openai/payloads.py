"""What the gateway reads of OpenAI payloads it otherwise forwards untouched: the text of a request (for the limits'
reservation and an estimated prompt), the text of an answer or stream event (for an estimated completion and the
time to the first token), and the usage an upstream reported."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

Texts = Callable[[dict[str, Any]], Iterable[tuple[int, str]]]
UsageReader = Callable[[dict[str, Any]], "tuple[int, int] | None"]


def choice_texts(payload: dict[str, Any]) -> Iterator[tuple[int, str]]:
    """(choice index, text) of a chat or completion answer or stream chunk: content, reasoning and tool calls'
    names and arguments (what an upstream that reports no usage is estimated from)."""
    for choice in payload.get("choices") or []:
        index = int(choice.get("index", 0))
        part = choice.get("delta") if "delta" in choice else choice.get("message")
        if part is None:
            if text := choice.get("text"):
                yield index, text
            continue
        for name in ("content", "reasoning_content"):
            if text := part.get(name):
                yield index, text
        for call in part.get("tool_calls") or []:
            function = call.get("function") or {}
            for text in (function.get("name"), function.get("arguments")):
                if text:
                    yield index, text


def usage_of(payload: dict[str, Any]) -> tuple[int, int] | None:
    """(prompt, completion) tokens an upstream reported in an answer or event: chat and completions'
    ``prompt_tokens``/``completion_tokens``, the Responses API's ``input_tokens``/``output_tokens`` (also under
    ``response``), or an embedding's ``prompt_tokens`` alone; None when there is no report."""
    usage = payload.get("usage")
    if not isinstance(usage, dict) and isinstance(payload.get("response"), dict):
        usage = payload["response"].get("usage")
    if not isinstance(usage, dict):
        return None
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    if completion is None:
        if prompt is None or "total_tokens" not in usage:
            return None
        completion = 0  # an embedding: nothing is generated
    return int(prompt or 0), int(completion)


def prompt_text(body: dict[str, Any]) -> str:
    """The text of a request: its messages' content (text parts) and tool calls' arguments, or its ``prompt`` or
    ``input`` (a string, or a list of strings)."""
    messages = body.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        for message in messages:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            parts.append(content if isinstance(content, str) else "".join(
                part.get("text") or "" for part in content or [] if isinstance(part, dict)))
            parts.extend(str((call.get("function") or {}).get("arguments") or "")
                         for call in message.get("tool_calls") or [] if isinstance(call, dict))
        return "\n".join(parts)
    for name in ("prompt", "input"):
        given = body.get(name)
        if isinstance(given, str):
            return given
        if isinstance(given, list):
            return "\n".join(item for item in given if isinstance(item, str))
    return ""
