"""The output stage's tool calls, per choice: the scheduler's text events become content ``TokenEvent``s and
``ToolCallDelta``s (parsed by ``engine/tool_calls.py``), and a choice that made calls finishes with "tool_calls".

Every generated token is still accounted for: the ids of text that is held back (a possible call marker) ride on
the next event out, or on an empty ``TokenEvent`` at the finish, so metering counts tool-call tokens like any
others."""

from __future__ import annotations

from dataclasses import replace

from engine.requests import (
    EngineEvent,
    FinishEvent,
    GenerationRequest,
    TokenEvent,
    TokenLogprob,
    ToolCallDelta,
)
from engine.tool_calls import Family, ToolCallParser


class CallStage:
    def __init__(self, family: Family, request: GenerationRequest) -> None:
        self.parser = ToolCallParser(family, parallel=request.parallel_tool_calls)
        self.request_id = request.request_id
        self._pending: tuple[int, ...] = ()  # ids of tokens whose text is held back
        self._pending_logprobs: tuple[TokenLogprob, ...] = ()  # and their logprobs, when asked

    def take(self, event: TokenEvent | FinishEvent) -> list[EngineEvent]:
        if isinstance(event, FinishEvent):
            ids, logprobs = self._pending, self._pending_logprobs
            content, pieces = self.parser.feed("", final=True)
        else:
            ids, logprobs = self._pending + event.token_ids, self._pending_logprobs + event.logprobs
            content, pieces = self.parser.feed(event.text, final=False)
        out: list[EngineEvent] = []
        if content:
            out.append(TokenEvent(self.request_id, event.index, content, ids, logprobs=logprobs))
            ids, logprobs = (), ()
        for call_index, call_id, name, arguments in pieces:  # a call's tokens have no logprobs in OpenAI's shape
            out.append(ToolCallDelta(self.request_id, event.index, call_index, arguments, ids, call_id, name))
            ids, logprobs = (), ()
        if isinstance(event, FinishEvent):
            if ids:
                out.append(TokenEvent(self.request_id, event.index, "", ids, logprobs=logprobs))
            reason = event.finish_reason
            if self.parser.calls_made and reason == "stop":
                reason = "tool_calls"
            out.append(replace(event, finish_reason=reason))
            self._pending, self._pending_logprobs = (), ()
        else:
            self._pending, self._pending_logprobs = ids, logprobs
        return out
