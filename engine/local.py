"""The local transformers model behind the ``EngineClient`` interface: prompt encoding, admission, async events."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Mapping
from functools import cached_property
from typing import Any

from jinja2 import TemplateError
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from engine.constraints import ConstraintCompiler, GuidedRow
from engine.errors import ContextTooLong, InvalidParameters
from engine.interface import DecodeMode, Health
from engine.logprobs import LogprobRecorder, TokenBytes
from engine.requests import (
    EngineEvent,
    ErrorEvent,
    FinishEvent,
    GenerationRequest,
    SamplingParams,
    StartEvent,
    TokenEvent,
)
from engine.sampling import SamplingState
from engine.scheduler import Scheduler, SchedulerStats, Sequence
from engine.text_stream import TextStream
from engine.tool_calls import Family
from engine.tool_format import ToolFormat, offers_tools
from engine.tool_output import CallStage

HEALTH_CACHE_S = 5.0
HEALTH_TIMEOUT_S = 30.0


class LocalEngine:
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, max_context: int,
                 max_batch_size: int = 32, max_queue: int = 256, prefix_cache_bytes: int = 0,
                 decode: DecodeMode = "auto", kv_budget_bytes: int | None = None,
                 prefill_chunk_tokens: int = 512, tool_parser: Family | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        eos = model.generation_config.eos_token_id if model.generation_config else None
        eos_ids = {eos} if isinstance(eos, int) else set(eos or ())
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        self.eos_token_ids = eos_ids
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos_ids), 0)
        self.scheduler = Scheduler(model, eos_token_ids=eos_ids, pad_token_id=pad, max_context=max_context,
                                   max_batch_size=max_batch_size, max_queue=max_queue,
                                   prefix_cache_bytes=prefix_cache_bytes, decode=decode,
                                   kv_budget_bytes=kv_budget_bytes, prefill_chunk_tokens=prefill_chunk_tokens)
        # What one request alone may use: the context budget, and no more than the batch's KV budget holds.
        self.max_context = self.scheduler.max_context
        self._health: tuple[float, Health] | None = None
        # How tools reach the prompt and how calls are read back: from the template, unless the model's settings
        # name a parser.
        self.tool_format = ToolFormat.of(tokenizer, tool_parser)
        self._constraints: ConstraintCompiler | None = None
        self._constraints_lock = threading.Lock()

    def constraints(self) -> ConstraintCompiler:
        """The model's grammar compiler, built with the first constrained request (it wraps the vocabulary)."""
        with self._constraints_lock:
            if self._constraints is None:
                self._constraints = ConstraintCompiler(self.tokenizer, self.model.config.vocab_size,
                                                       self.eos_token_ids)
            return self._constraints

    async def _guided_rows(self, request: GenerationRequest, prompt_ids: list[int]) -> list[GuidedRow | None]:
        """One grammar state per choice when the request is constrained, compiled off the engine's thread."""
        constraint, params = self.tool_format.constraint(request), request.sampling
        if constraint is None:
            return [None] * params.n
        if params.ignore_eos:  # a finished grammar allows only the end of the sequence
            raise InvalidParameters("ignore_eos cannot be combined with a constraint", param="ignore_eos")
        compiler = self._constraints or await asyncio.to_thread(self.constraints)
        return list(await compiler.rows(constraint, prompt_ids, params.n))

    def encode(self, request: GenerationRequest) -> list[int]:
        if request.prompt_ids is not None:
            return list(request.prompt_ids)
        if request.prompt is not None:
            return self.tokenizer.encode(request.prompt)
        assert request.messages is not None
        tools = list(request.tools) if offers_tools(request) else []
        return self.encode_messages(request.messages, tools)

    def encode_messages(self, messages: list[dict[str, Any]], tools: list[Mapping[str, Any]] | None = None
                        ) -> list[int]:
        """The model's chat template applied, ready for the assistant's turn (a plain layout when it has none);
        with ``tools`` offered, by the template where it renders tools, else by the fallback prompt."""
        if not messages:
            raise InvalidParameters("messages must not be empty", param="messages")
        messages, extra = self.tool_format.prompt(messages, tools or [])
        if self.tokenizer.chat_template is None:
            return self.tokenizer.encode(plain_chat_prompt(messages))
        try:
            encoded: Any = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                              **extra)
        except TemplateError as exc:  # e.g. a template that insists on alternating roles
            raise InvalidParameters(f"the model's chat template refused these messages: {exc}",
                                    param="messages") from exc
        return list(encoded["input_ids"] if isinstance(encoded, Mapping) else encoded)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Each text's length in tokens on its own: no special tokens, no chat template around it."""
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    async def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        # Off the event loop (a 1 MiB prompt takes a second or more), in the default pool so a small prompt need not
        # wait for a huge one. Concurrent calls are safe: the Rust tokenizer encodes under a shared borrow, and only
        # changing truncation or padding takes it exclusively ("Already borrowed"), which nothing here does.
        prompt_ids = await asyncio.to_thread(self.encode, request)
        if not prompt_ids:
            raise InvalidParameters("the prompt is empty", param="messages")
        vocabulary = self.model.config.vocab_size
        if any(not 0 <= token < vocabulary for token in prompt_ids):
            raise InvalidParameters(f"prompt token ids must be in [0, {vocabulary})", param="prompt_ids")
        if len(prompt_ids) >= self.max_context:
            raise ContextTooLong(len(prompt_ids), self.max_context)
        self.scheduler.check_fits(len(prompt_ids), request.sampling.n, request.sampling.max_tokens)
        guided = await self._guided_rows(request, prompt_ids)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[EngineEvent] = asyncio.Queue()

        def emit(event: EngineEvent) -> None:  # called from the engine thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:
                pass  # the caller's event loop is closed: nobody is listening any more

        params = request.sampling
        if params.logprobs is not None and "token_bytes" not in self.__dict__:
            await asyncio.to_thread(lambda: self.token_bytes)  # built once, off the event loop
        offered = offers_tools(request)
        kept = self.tool_format.kept_tokens if offered else frozenset()
        sequences = [self._sequence(request.request_id, index, prompt_ids, params, emit, guided[index], kept)
                     for index in range(params.n)]
        self.scheduler.submit(sequences)
        open_choices = params.n
        calls = [CallStage(self.tool_format.family, request) for _ in range(params.n)] if offered else None
        try:
            yield StartEvent(request.request_id, len(prompt_ids), params.max_tokens)
            while open_choices:
                event = await events.get()
                if calls is not None and isinstance(event, (TokenEvent, FinishEvent)):
                    for staged in calls[event.index].take(event):
                        yield staged
                else:
                    yield event
                if isinstance(event, FinishEvent):
                    open_choices -= 1
                elif isinstance(event, ErrorEvent):
                    open_choices = 0
        finally:
            if open_choices:  # the consumer went away early: free the slots
                self.abort(request.request_id)

    def _sequence(self, request_id: str, index: int, prompt_ids: list[int], params: SamplingParams,
                  emit: Any, guided: GuidedRow | None = None, kept: frozenset[int] = frozenset()) -> Sequence:
        # With n > 1 each choice gets its own seed derived from the request's, so choices differ but reproduce.
        seed = None if params.seed is None else params.seed + index
        logprobs = LogprobRecorder(params.logprobs, self.token_bytes) if params.logprobs is not None else None
        return Sequence(request_id=request_id, index=index, prompt_ids=prompt_ids,
                        sampling=SamplingState.create(params, prompt_ids, seed, logprobs),
                        text=TextStream(self.tokenizer.backend_tokenizer, params.stop, kept),
                        max_tokens=params.max_tokens, emit=emit, ignore_eos=params.ignore_eos, guided=guided)

    @cached_property
    def token_bytes(self) -> TokenBytes:
        """Every token's exact bytes, for logprobs: built on the first request that asks for them (a fraction of
        a second for a 150k vocabulary), then kept."""
        return TokenBytes.of(self.tokenizer)

    def abort(self, request_id: str) -> None:
        self.scheduler.cancel(request_id)

    def end_all(self, message: str) -> int:
        """End every request with an ``engine_stopped`` error (a server about to stop); see Scheduler.end_all."""
        return self.scheduler.end_all(message)

    async def check_health(self) -> Health:
        """Really generate one token (cached for a few seconds), so a wedged engine shows as unhealthy."""
        now = time.monotonic()
        if self._health and now - self._health[0] < HEALTH_CACHE_S:
            return self._health[1]
        probe = GenerationRequest(prompt_ids=[self.scheduler.pad_token_id],
                                  sampling=SamplingParams(temperature=0, max_tokens=1))
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                async for event in self.generate(probe):
                    if isinstance(event, ErrorEvent):
                        raise RuntimeError(event.message)
            health = Health(ok=True, detail="generated a token")
        except Exception as exc:  # noqa: BLE001 (any failure is the answer)
            health = Health(ok=False, detail=f"probe failed: {type(exc).__name__}")
        self._health = (now, health)
        return health

    def stats(self) -> SchedulerStats:
        return self.scheduler.stats()

    def close(self) -> None:
        self.scheduler.stop()
        if self._constraints is not None:
            self._constraints.close()


def plain_chat_prompt(messages: list[dict[str, str]]) -> str:
    """For models without a chat template: role-labelled turns, ending where the assistant speaks."""
    turns = [f"{message.get('role', 'user').capitalize()}: {message.get('content', '')}" for message in messages]
    return "\n".join([*turns, "Assistant:"])

