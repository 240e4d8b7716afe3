"""Counting one request's tokens and timings from its engine events, into exactly one usage record."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from api import tracing
from api.services.accounts.principal import Principal
from api.services.usage.writer import Reservation, UsageRecord, UsageWriter
from engine.requests import EngineEvent, ErrorEvent, FinishEvent, StartEvent, TokenEvent, ToolCallDelta


@dataclass
class Meter:
    writer: UsageWriter
    request_id: str
    user_id: int | None
    api_key_id: int | None
    model: str
    backend: str
    count_source: str = "engine"
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    prompt_tokens: int = 0
    # Per choice: tokens seen in token events, replaced by the engine's own count when the choice finishes
    # (it includes tokens that produced no text, such as the end-of-sequence token).
    completion: dict[int, int] = field(default_factory=dict)
    finish_reasons: dict[int, str] = field(default_factory=dict)
    error: str | None = None
    recorded: bool = False
    reservation: Reservation | None = None  # what admission reserved against token limits, settled by the record
    trace: tracing.NoTrace = field(default_factory=tracing.current, repr=False)  # ended by the record

    @classmethod
    def for_principal(cls, writer: UsageWriter, principal: Principal, request_id: str, model: str,
                      backend: str) -> Meter:
        return cls(writer, request_id, principal.user.id, principal.api_key_id, model, backend)

    @property
    def completion_tokens(self) -> int:
        return sum(self.completion.values())

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    def tokens_per_s(self) -> float | None:
        if self.first_token_at is None or self.completion_tokens < 2:
            return None
        elapsed = time.perf_counter() - self.first_token_at
        return (self.completion_tokens - 1) / elapsed if elapsed > 0 else None

    def observe(self, event: EngineEvent) -> None:
        if isinstance(event, StartEvent):
            self.prompt_tokens = event.prompt_tokens
            if event.backend:
                self.backend = event.backend
        elif isinstance(event, TokenEvent | ToolCallDelta):  # tokens spent in tool calls count like any
            if self.first_token_at is None:
                self.mark_first_token()
            self.completion[event.index] = self.completion.get(event.index, 0) + event.tokens
        elif isinstance(event, FinishEvent):
            self.prompt_tokens = event.usage.prompt_tokens
            self.completion[event.index] = event.usage.completion_tokens
            self.finish_reasons[event.index] = event.finish_reason
        elif isinstance(event, ErrorEvent):
            self.error = event.code

    def mark_first_token(self) -> None:
        self.first_token_at = time.perf_counter()
        self.trace.first_token()

    def record(self, status: str | None = None) -> None:
        """Queue the usage row, once; ``status`` overrides what the events say (``cancelled`` on a disconnect)."""
        if self.recorded:
            return
        self.recorded = True
        if status is None:
            status = "error" if self.error else (
                "cancelled" if "cancelled" in self.finish_reasons.values() else "ok")
        ttft = self.ttft_s
        self.writer.record(UsageRecord(
            request_id=self.request_id, user_id=self.user_id, api_key_id=self.api_key_id, model=self.model,
            backend=self.backend, prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
            ttft_ms=None if ttft is None else ttft * 1000, latency_ms=(time.perf_counter() - self.started) * 1000,
            tokens_per_s=self.tokens_per_s(), status=status, count_source=self.count_source,
            reservation=self.reservation))
        self.trace.end(status, {
            "llmws.request_id": self.request_id, "gen_ai.request.model": self.model, "llmws.backend": self.backend,
            "gen_ai.usage.input_tokens": self.prompt_tokens, "gen_ai.usage.output_tokens": self.completion_tokens,
            "llmws.count_source": self.count_source})
