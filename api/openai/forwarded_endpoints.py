"""The OpenAI endpoints beyond chat that an alias forwards to its upstream as they are (embeddings, responses,
audio, images, moderations, vLLM's rerank and score), as the one forwarder (`api/openai/forwarding.py`) sees
them: where each goes upstream, the request's text (the estimate when no usage comes back, and what a limit
reserves), the answer's generated text, and where its usage lies. None of them runs on the local engine yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from api.openai.forwarding import Endpoint
from api.openai.payloads import usage_of

# Where the text that costs tokens lies inside a request or an answer: only these keys of a nested object are
# followed (a role, a part's type or an image's URL are not text the model reads).
TEXT_KEYS = frozenset({"text", "content", "input", "output", "query", "documents", "document", "queries",
                       "arguments", "refusal", "instructions", "prompt", "text_1", "text_2", "data_1", "data_2"})


def texts_in(value: Any, depth: int = 0) -> Iterator[str]:
    """The strings of a request or answer field, followed through lists and the text keys of objects (token ids,
    lists of integers, are not text: an estimate undercounts them)."""
    if depth > 32:  # nested this deep, it holds no text worth the recursion
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from texts_in(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in TEXT_KEYS:
                yield from texts_in(item, depth + 1)


def prompt_of(*fields: str) -> Callable[[dict[str, Any]], str]:
    def prompt_text(body: dict[str, Any]) -> str:
        return "\n".join(text for name in fields for text in texts_in(body.get(name)))
    return prompt_text


def generated_texts(payload: dict[str, Any]) -> Iterator[tuple[int, str]]:
    """The generated text of an answer or one streamed event: a streamed delta (`response.output_text.delta`,
    `transcript.text.delta`), a transcript's `text`, or a response's `output`."""
    if str(payload.get("type", "")).endswith(".delta"):
        if isinstance(payload.get("delta"), str):
            yield 0, payload["delta"]
        return
    if isinstance(payload.get("text"), str):
        yield 0, payload["text"]
        return
    for text in texts_in(payload.get("output")):
        yield 0, text


def usage_or_total(payload: dict[str, Any]) -> tuple[int, int] | None:
    """The usage as chat reports it, or a bare `total_tokens` as vLLM's rerank does (all of it input)."""
    reported = usage_of(payload)
    usage = payload.get("usage")
    if reported is None and isinstance(usage, dict) and isinstance(usage.get("total_tokens"), int):
        return usage["total_tokens"], 0
    return reported


def nothing_generated(_payload: dict[str, Any]) -> Iterator[tuple[int, str]]:
    return iter(())


EMBEDDINGS = Endpoint("/embeddings", "embd", prompt_of("input"), nothing_generated, generates=False)
RESPONSES = Endpoint("/responses", "resp", prompt_of("instructions", "input"), generated_texts, done_marker=False)
TRANSCRIPTIONS = Endpoint("/audio/transcriptions", "transcr", prompt_of("prompt"), generated_texts,
                          done_marker=False)
TRANSLATIONS = Endpoint("/audio/translations", "transl", prompt_of("prompt"), generated_texts, done_marker=False)
SPEECH = Endpoint("/audio/speech", "speech", prompt_of("input", "instructions"), nothing_generated, generates=False)
IMAGES = Endpoint("/images/generations", "img", prompt_of("prompt"), nothing_generated, generates=False)
MODERATIONS = Endpoint("/moderations", "modr", prompt_of("input"), nothing_generated, generates=False)
RERANK = Endpoint("/rerank", "rerank", prompt_of("query", "documents"), nothing_generated, usage_or_total,
                  generates=False)
SCORE = Endpoint("/score", "score", prompt_of("text_1", "text_2", "queries", "documents", "data_1", "data_2"),
                 nothing_generated, generates=False)


def response_id(payload: dict[str, Any]) -> str | None:
    """The id of a stored response, from a Responses answer or one of its stream's events."""
    holder = payload.get("response") if isinstance(payload.get("response"), dict) else payload
    identifier = holder.get("id")
    return identifier if isinstance(identifier, str) and holder.get("object") == "response" else None
