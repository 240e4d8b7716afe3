"""What a caller asks of an engine (a prompt and sampling parameters) and what it gets back (a stream of events)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.errors import InvalidParameters

FinishReason = Literal["stop", "length", "cancelled", "error", "tool_calls"]

ConstraintKind = Literal["json_schema", "json_object", "regex", "choice", "grammar"]


@dataclass(frozen=True)
class Constraint:
    """What a choice's output must match, enforced by a token mask in every decode step (engine/constraints.py).
    ``spec`` is the JSON schema (as JSON text) for ``json_schema``, nothing for ``json_object``, the regular
    expression for ``regex``, a JSON list of strings for ``choice`` and a Lark grammar for ``grammar``. ``param``
    is the request field a refusal names (``response_format``, ``tools``, ``structured_outputs.regex``, ...)."""

    kind: ConstraintKind
    spec: str = ""
    param: str = "response_format"


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling, validated on construction. ``temperature`` 0 means greedy (deterministic)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    n: int = 1
    # Generate exactly max_tokens even past an end-of-sequence token (benchmarks, load tests).
    ignore_eos: bool = False
    # Log-probabilities with each token: None off; k >= 0 the chosen token's and the k likeliest others' (<= 20).
    logprobs: int | None = None

    def __post_init__(self) -> None:
        checks = [
            ("temperature", math.isfinite(self.temperature) and 0 <= self.temperature <= 2, "between 0 and 2"),
            ("top_p", math.isfinite(self.top_p) and 0 < self.top_p <= 1, "greater than 0 and at most 1"),
            ("top_k", self.top_k >= 0, "0 (off) or more"),
            ("repetition_penalty", math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0,
             "greater than 0"),
            ("presence_penalty", -2 <= self.presence_penalty <= 2, "between -2 and 2"),
            ("frequency_penalty", -2 <= self.frequency_penalty <= 2, "between -2 and 2"),
            ("max_tokens", self.max_tokens >= 1, "at least 1"),
            ("seed", self.seed is None or 0 <= self.seed < 2**62, "between 0 and 2**62"),
            ("n", 1 <= self.n <= 16, "between 1 and 16"),
            ("logprobs", self.logprobs is None or 0 <= self.logprobs <= 20, "between 0 and 20"),
            ("stop", len(self.stop) <= 8 and all(0 < len(s) <= 200 for s in self.stop),
             "at most 8 non-empty strings of at most 200 characters"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise InvalidParameters(f"{name} must be {rule}", param=name)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalised(self) -> bool:
        return self.repetition_penalty != 1 or self.presence_penalty != 0 or self.frequency_penalty != 0


@dataclass(frozen=True)
class GenerationRequest:
    """A prompt as chat ``messages`` or plain ``prompt`` text (or ready token ids), and how to sample it.

    ``messages`` are OpenAI-shaped dicts as chat templates take them: ``role``, ``content`` (text), an assistant's
    ``tool_calls`` ([{id, type: "function", function: {name, arguments}}]) and a tool result's ``tool_call_id``.
    ``tools`` are OpenAI function tools ({type: "function", function: {name, description?, parameters?}});
    ``tool_choice`` is "none", "auto", "required" or {"type": "function", "function": {"name": ...}}.
    ``constraint`` is the response format; with tools, the engine builds the calls' own constraint."""

    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    prompt_ids: list[int] | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: str | Mapping[str, Any] | None = None
    parallel_tool_calls: bool = True
    constraint: Constraint | None = None

    def __post_init__(self) -> None:
        given = [part is not None for part in (self.messages, self.prompt, self.prompt_ids)]
        if sum(given) != 1:
            raise InvalidParameters("give exactly one of messages, prompt or prompt_ids", param="messages")


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class StartEvent:
    """The request was admitted: the first event of every stream, before any token."""

    request_id: str
    prompt_tokens: int
    max_tokens: int
    backend: str | None = None  # which deployment serves it, when a router chose one


@dataclass(frozen=True)
class TopLogprob:
    token_id: int
    token: str  # the token's text (a part of a character shows as the bytes' replacement text)
    bytes: tuple[int, ...]  # the token's exact UTF-8 bytes
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability, as sampled (after penalties and masks), and its ``top`` rivals,
    likeliest first."""

    token_id: int
    token: str
    bytes: tuple[int, ...]
    logprob: float
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class TokenEvent:
    """New text for choice ``index``: whole characters, never a (partial) stop string. ``token_ids`` are the
    tokens generated since the previous event (some tokens only complete a character later)."""

    request_id: str
    index: int
    text: str
    token_ids: tuple[int, ...]
    # How many tokens this text stands for when the ids are not known (an upstream's stream): an estimate.
    token_count: int | None = None
    logprobs: tuple[TokenLogprob, ...] = ()  # one per token id, when the request asked for them

    @property
    def tokens(self) -> int:
        return len(self.token_ids) if self.token_count is None else self.token_count


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of tool call ``call_index`` of choice ``index``, as the model writes it: the first piece carries
    the call's ``id`` and ``name``, later ones only ``arguments`` text; a call's pieces concatenate to its JSON
    arguments. ``token_ids`` are the tokens behind it (metering), as in a TokenEvent."""

    request_id: str
    index: int
    call_index: int
    arguments: str
    token_ids: tuple[int, ...] = ()
    id: str | None = None
    name: str | None = None

    @property
    def tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class FinishEvent:
    request_id: str
    index: int
    finish_reason: FinishReason
    usage: Usage
    output_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ErrorEvent:
    request_id: str
    message: str
    code: str


EngineEvent = StartEvent | TokenEvent | ToolCallDelta | FinishEvent | ErrorEvent
