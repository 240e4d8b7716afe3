"""The OpenAI endpoints that an alias forwards to its upstream as they are (embeddings, responses, audio, images,
moderations, vLLM's rerank and score): what each is called, where it goes upstream, and how its usage is read
from the answer or, when the upstream reports none, estimated from the request and the answer.

Only the few fields read here are looked at; the forwarder sends everything else on untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Where the text that costs tokens lies inside a request or an answer: only these keys of a nested object are
# followed (a role, a part's type or an image's URL are not text the model reads as tokens).
TEXT_KEYS = frozenset({"text", "content", "input", "output", "query", "documents", "document", "queries",
                       "arguments", "delta", "refusal"})


@dataclass(frozen=True)
class Endpoint:
    """``what`` names it in messages; ``path`` is the upstream's path below `/v1`; ``prompt_fields`` hold the
    request's text (estimated when no usage comes back); ``generates`` says whether the answer is generated text
    whose length a limit must reserve for."""

    what: str
    path: str
    prompt_fields: tuple[str, ...]
    multipart: bool = False
    generates: bool = False


EMBEDDINGS = Endpoint("embeddings", "/embeddings", ("input",))
RESPONSES = Endpoint("responses", "/responses", ("instructions", "input"), generates=True)
TRANSCRIPTIONS = Endpoint("audio transcriptions", "/audio/transcriptions", ("prompt",), multipart=True,
                          generates=True)
TRANSLATIONS = Endpoint("audio translations", "/audio/translations", ("prompt",), multipart=True, generates=True)
SPEECH = Endpoint("speech", "/audio/speech", ("input", "instructions"))
IMAGES = Endpoint("image generation", "/images/generations", ("prompt",))
MODERATIONS = Endpoint("moderations", "/moderations", ("input",))
RERANK = Endpoint("rerank", "/rerank", ("query", "documents"))
SCORE = Endpoint("score", "/score", ("text_1", "text_2", "queries", "documents", "data_1", "data_2"))


def prompt_tokens(endpoint: Endpoint, fields: dict[str, Any], count: Callable[[str], int]) -> int:
    """An estimate of the request's input tokens: its text counted, token ids (lists of integers) as given."""
    return sum(tokens_in(fields.get(name), count) for name in endpoint.prompt_fields)


def tokens_in(value: Any, count: Callable[[str], int], depth: int = 0) -> int:
    if depth > 32:  # a body nested this deep holds no text worth the recursion
        return 0
    if isinstance(value, str):
        return count(value)
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return 1  # a token id
    if isinstance(value, list):
        return sum(tokens_in(item, count, depth + 1) for item in value)
    if isinstance(value, dict):
        return sum(tokens_in(item, count, depth + 1) for key, item in value.items() if key in TEXT_KEYS)
    return 0


def reported_usage(payload: Any) -> tuple[int, int] | None:
    """(input, output) tokens from an answer's or an event's `usage` (Chat's names, the Responses API's, or a
    bare `total_tokens` as rerank sends), or None when there is no token count (none at all, or audio reported in
    seconds)."""
    if not isinstance(payload, dict):
        return None
    usage = payload.get("usage")
    if not isinstance(usage, dict) and isinstance(payload.get("response"), dict):
        usage = payload["response"].get("usage")  # the Responses API's closing event
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    total = usage.get("total_tokens")
    if prompt is None and completion is None and total is None:
        return None
    try:
        output = int(completion or 0)
        return (int(prompt) if prompt is not None else max(int(total or 0) - output, 0)), output
    except (TypeError, ValueError):
        return None


def answer_tokens(payload: Any, count: Callable[[str], int]) -> int:
    """An estimate of the generated tokens in a JSON answer: a transcription's `text`, a response's output."""
    if not isinstance(payload, dict):
        return 0
    if isinstance(payload.get("text"), str):
        return count(payload["text"])
    return tokens_in(payload.get("output"), count)


def event_tokens(event: Any, count: Callable[[str], int]) -> int:
    """An estimate of the generated tokens in one streamed event (`response.output_text.delta`,
    `transcript.text.delta`): its delta's text."""
    if isinstance(event, dict) and str(event.get("type", "")).endswith(".delta") and isinstance(
            event.get("delta"), str):
        return count(event["delta"])
    return 0


def with_alias(payload: Any, alias: str) -> bool:
    """Puts the alias where the answer names the upstream's model (at the top, or in a Responses event's
    `response`), as the chat relay does; whether anything changed."""
    changed = False
    for holder in (payload, payload.get("response") if isinstance(payload, dict) else None):
        if isinstance(holder, dict) and isinstance(holder.get("model"), str) and holder["model"] != alias:
            holder["model"] = alias
            changed = True
    return changed


def response_id(payload: Any) -> str | None:
    """The id of a stored response, from a Responses answer or its stream's first event."""
    if not isinstance(payload, dict):
        return None
    holder = payload.get("response") if isinstance(payload.get("response"), dict) else payload
    identifier = holder.get("id")
    return identifier if isinstance(identifier, str) and holder.get("object") == "response" else None
