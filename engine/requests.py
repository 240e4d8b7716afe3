"""What a caller asks of an engine (a prompt and sampling parameters) and what it gets back (a stream of events)."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Literal

from engine.errors import InvalidParameters

FinishReason = Literal["stop", "length", "cancelled", "error"]


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
    """A prompt as chat ``messages`` or plain ``prompt`` text (or ready token ids), and how to sample it."""

    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    prompt_ids: list[int] | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

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
class TokenEvent:
    """New text for choice ``index``: whole characters, never a (partial) stop string. ``token_ids`` are the
    tokens generated since the previous event (some tokens only complete a character later)."""

    request_id: str
    index: int
    text: str
    token_ids: tuple[int, ...]
    # How many tokens this text stands for when the ids are not known (an upstream's stream): an estimate.
    token_count: int | None = None

    @property
    def tokens(self) -> int:
        return len(self.token_ids) if self.token_count is None else self.token_count


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


EngineEvent = StartEvent | TokenEvent | FinishEvent | ErrorEvent
