"""The output stage: a backend's events become the turn's results (text deltas, a finish per choice, a failure),
metered on the way; and the one usage and metrics payload every protocol reports. A text delta carries its
tokens' logprobs when the request asked for them. Tool calls arrive parsed by the engine's own output stage
(engine/tool_output.py) and pass as ``ToolCallPiece``s."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from api.services.chat.serving import Generation
from api.services.usage.metering import Meter
from engine.errors import GenerationFailed
from engine.requests import ErrorEvent, FinishEvent, TokenEvent, TokenLogprob, ToolCallDelta


@dataclass(frozen=True)
class TextDelta:
    index: int  # the choice
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()  # the tokens behind the text, when asked for


@dataclass(frozen=True)
class Finished:
    index: int
    reason: str  # stop, length, cancelled, error


@dataclass(frozen=True)
class Failed:
    code: str
    message: str


@dataclass(frozen=True)
class ToolCallPiece:
    """A piece of tool call ``call`` of choice ``index``: the first carries its id and name; the pieces'
    ``arguments`` concatenate to the call's JSON arguments."""

    index: int
    call: int
    arguments: str
    id: str | None = None
    name: str | None = None


@dataclass
class CallResult:
    id: str
    name: str
    arguments: str = ""

    def openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def add_piece(calls: list[CallResult], piece: ToolCallPiece) -> None:
    if piece.id is not None:
        calls.append(CallResult(piece.id, piece.name or ""))
    calls[piece.call].arguments += piece.arguments


ResultEvent = TextDelta | ToolCallPiece | Finished | Failed


def tool_call_event(piece: ToolCallPiece) -> dict[str, Any]:
    """A tool call piece as the native stream and the WebSocket send it: ``index`` is the call's place in the reply;
    its first piece carries ``id`` and ``name``, every piece a part of ``arguments`` (they concatenate)."""
    return {"index": piece.call, **({"id": piece.id, "name": piece.name} if piece.id is not None else {}),
            "arguments": piece.arguments}


def calls_of(calls: list[CallResult]) -> dict[str, Any]:
    """``{"tool_calls": [...]}`` in OpenAI's shape when the reply made calls; nothing when it made none."""
    return {"tool_calls": [call.openai() for call in calls]} if calls else {}


async def results(generation: Generation) -> AsyncIterator[ResultEvent]:
    """The generation's results as they come; the stream ends after a failure. Closing the generation is the
    caller's (it holds the slots and records the usage, whatever happens to this iterator)."""
    async for event in generation.events:
        generation.meter.observe(event)
        if isinstance(event, TokenEvent):
            if event.text:
                yield TextDelta(event.index, event.text, event.logprobs)
        elif isinstance(event, ToolCallDelta):
            yield ToolCallPiece(event.index, event.call_index, event.arguments, event.id, event.name)
        elif isinstance(event, FinishEvent):
            yield Finished(event.index, event.finish_reason)
        elif isinstance(event, ErrorEvent):
            yield Failed(event.code, event.message)
            return


def start(generation: Generation) -> dict[str, Any]:
    """What a streamed turn's first event says, in every protocol's start event: the model serving it, the prompt's
    tokens (after trimming) and the most it may generate."""
    return {"model": generation.backend.model, "input_tokens": generation.start.prompt_tokens,
            "max_tokens": generation.start.max_tokens}


@dataclass
class Transcript:
    """A streamed turn's results as they pass (``record`` each): its text so far and how it ended. A protocol
    only writes each result in its own wire format."""

    parts: list[str] = field(default_factory=list)
    finish_reason: str = "cancelled"  # until the backend says otherwise: a stream cut short was cancelled
    failure: Failed | None = None
    tool_calls: list[CallResult] = field(default_factory=list)

    def record(self, result: ResultEvent) -> None:
        if isinstance(result, TextDelta):
            self.parts.append(result.text)
        elif isinstance(result, ToolCallPiece):
            add_piece(self.tool_calls, result)
        elif isinstance(result, Finished):
            self.finish_reason = result.reason
        else:
            self.failure = result

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def status(self) -> str:
        """done, cancelled or error: how the stream ended."""
        if self.failure is not None:
            return "error"
        return "cancelled" if self.finish_reason == "cancelled" else "done"


@dataclass
class ChoiceResult:
    parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    tool_calls: list[CallResult] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts)


async def collect(generation: Generation, watch: AbstractAsyncContextManager[Any] | None = None
                  ) -> list[ChoiceResult]:
    """Run a generation to its end for an answer in one piece, closing it; ``watch`` is held meanwhile (the
    HTTP routes pass one that aborts the generation when the client disconnects). A failure raises
    ``GenerationFailed``."""
    choices = [ChoiceResult() for _ in range(generation.request.sampling.n)]
    try:
        async with watch or nullcontext():
            async for result in results(generation):
                if isinstance(result, TextDelta):
                    choices[result.index].parts.append(result.text)
                    choices[result.index].logprobs.extend(result.logprobs)
                elif isinstance(result, ToolCallPiece):
                    add_piece(choices[result.index].tool_calls, result)
                elif isinstance(result, Finished):
                    choices[result.index].finish_reason = result.reason
                else:
                    raise GenerationFailed(result.message)
    finally:
        await generation.close()
    return choices


def usage(meter: Meter) -> dict[str, int]:
    """The tokens a turn used, as every protocol reports them."""
    prompt, completion = meter.prompt_tokens, meter.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def metrics(meter: Meter) -> dict[str, float | None]:
    """How fast the turn was served: time to the first token and the decoding rate."""
    ttft = meter.ttft_s
    return {"ttft_ms": None if ttft is None else round(ttft * 1000, 1), "tokens_per_s": meter.tokens_per_s()}
