"""Constrained decoding: a request's ``Constraint`` compiled into a grammar, and one matcher per sequence that
masks that row's logits in every decode step (llguidance).

A ``ConstraintCompiler`` is built once per loaded model, the first time a request has a constraint (wrapping the
tokenizer takes a fraction of a second). It compiles a constraint off the engine's thread, caches the compiled
matcher by (kind, spec) in a bounded LRU (a refusal too, so a pathological schema costs its compile once), and
hands each sequence a copy of it. A spec the library rejects, one larger than ``MAX_SPEC_CHARS``, or one that does
not compile within ``COMPILE_TIMEOUT_S`` is ``InvalidParameters`` naming the constraint's ``param``: the request
is refused before it reaches the engine, never served unconstrained.

JSON (``json_schema``, ``json_object``) is generated compact (no whitespace between tokens): a small model can
otherwise pad an answer with whitespace until ``max_tokens``; the output is the same JSON.

Reasoning models: where the vocabulary has ``<think>`` and ``</think>`` as single tokens, the grammar applies
only after the reasoning block. A prompt that leaves a ``<think>`` open (templates that start the block
themselves) starts unmasked; otherwise the first token may be ``<think>`` (the model starts reasoning; unmasked
until ``</think>``) or what the grammar allows. The matcher is fed only the tokens after ``</think>``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import llguidance
import llguidance.hf
import llguidance.torch
import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from engine.errors import InvalidParameters
from engine.requests import Constraint

COMPILE_TIMEOUT_S = 2.0
MAX_SPEC_CHARS = 100_000  # the API's own limit on one string field
CACHE_ENTRIES = 256
COMPILE_WORKERS = 2
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
COMPACT_JSON: llguidance.JsonCompileOptions = {"whitespace_flexible": False}
ANY_OBJECT = '{"type": "object"}'
NEG_INF_BITS = -0x00800000  # float32 -inf's bits, 0xFF800000, as a signed int32

Phase = Literal["opening", "thinking", "guided"]


@dataclass
class _Compile:
    """One compile in flight, shared by every request that waits for the same constraint."""

    future: Future[llguidance.LLMatcher | InvalidParameters] | None = None
    started_at: float | None = None  # when a worker began it (the time limit counts from here)


class ConstraintViolated(Exception):
    """The sampler chose a token the grammar had masked out (a bug, never the caller's doing): the request ends
    with an error rather than going on unconstrained."""


@dataclass
class GuidedRow:
    """One sequence's place in its grammar: the matcher, fed every accepted token once the reasoning block (if
    any) is over."""

    matcher: llguidance.LLMatcher
    phase: Phase
    think: tuple[int, int] | None  # the <think> and </think> token ids, where the model has them

    @property
    def masks(self) -> bool:
        return self.phase != "thinking"

    def advance(self, token: int) -> None:
        """Take the token the row just sampled; raises ``ConstraintViolated`` when the grammar refuses it."""
        if self.think is not None and self.phase != "guided":
            opened, closed = self.think
            if self.phase == "opening" and token == opened:
                self.phase = "thinking"
                return
            if self.phase == "thinking":
                if token == closed:
                    self.phase = "guided"
                return
            self.phase = "guided"
        if not self.matcher.consume_token(token):
            raise ConstraintViolated(f"token {token} refused by the grammar: {self.matcher.get_error()}")


class ConstraintCompiler:
    """Constraints compiled against one model's tokenizer and vocabulary (its logits' width).

    Compiles run in a small pool of their own, one per (kind, spec) at a time: a hundred requests with the same new
    schema wait for one compile, and never queue behind tokenizing in the default pool. The time limit counts from
    when the compile starts, not the wait for a worker; a refusal is cached only when the compile itself took more
    than the limit in CPU time, so a legitimate schema is never refused for ever because the machine was busy."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, vocab_size: int, eos_token_ids: set[int]) -> None:
        self.vocab_size = vocab_size
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size,
                                                      eos_token=sorted(eos_token_ids))
        self.think = _think_tokens(tokenizer)
        self._cache: OrderedDict[tuple[str, str], llguidance.LLMatcher | InvalidParameters] = OrderedDict()
        self._compiling: dict[tuple[str, str], _Compile] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=COMPILE_WORKERS, thread_name_prefix="llmws-grammar")

    async def rows(self, constraint: Constraint, prompt_ids: Sequence[int], count: int) -> list[GuidedRow]:
        """``count`` fresh rows for a request's choices; compiled in a worker thread, within the time limit."""
        compiled = await self._compiled(constraint)
        phase = self._first_phase(prompt_ids)
        return [GuidedRow(compiled.deep_copy(), phase, self.think) for _ in range(count)]

    async def _compiled(self, constraint: Constraint) -> llguidance.LLMatcher:
        key = (constraint.kind, constraint.spec)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
            elif (job := self._compiling.get(key)) is None:
                job = self._compiling[key] = _Compile()
                job.future = self._pool.submit(self._run, key, constraint, job)
        if cached is None:
            cached = await self._wait(job, constraint)
        if isinstance(cached, InvalidParameters):
            raise InvalidParameters(cached.message, param=constraint.param)
        return cached

    async def _wait(self, job: _Compile, constraint: Constraint) -> llguidance.LLMatcher | InvalidParameters:
        """The compile's result, or a refusal once it has been compiling for longer than the limit (it goes on in
        its worker, and its result is cached for the requests after)."""
        assert job.future is not None
        done = asyncio.wrap_future(job.future)
        while True:
            started = job.started_at
            left = COMPILE_TIMEOUT_S if started is None else started + COMPILE_TIMEOUT_S - time.monotonic()
            try:
                return await asyncio.wait_for(asyncio.shield(done), max(left, 0.0))
            except TimeoutError:
                if job.started_at is not None and time.monotonic() - job.started_at >= COMPILE_TIMEOUT_S:
                    raise InvalidParameters(f"the {constraint.kind} constraint did not compile within "
                                            f"{COMPILE_TIMEOUT_S:g} s: simplify it", param=constraint.param) from None

    def _run(self, key: tuple[str, str], constraint: Constraint, job: _Compile
             ) -> llguidance.LLMatcher | InvalidParameters:
        job.started_at = time.monotonic()
        cpu_started = time.thread_time()
        try:
            compiled = self._compile(constraint)
            if time.thread_time() - cpu_started > COMPILE_TIMEOUT_S:  # refused however often it is sent
                compiled = InvalidParameters(f"the {constraint.kind} constraint took longer than "
                                             f"{COMPILE_TIMEOUT_S:g} s to compile: simplify it",
                                             param=constraint.param)
            with self._lock:
                self._cache[key] = compiled
                while len(self._cache) > CACHE_ENTRIES:
                    self._cache.popitem(last=False)
            return compiled
        finally:
            with self._lock:
                if self._compiling.get(key) is job:
                    del self._compiling[key]

    def close(self) -> None:
        """Stop the compile workers (a compile still running is left to finish in its thread)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def compile(self, constraint: Constraint) -> llguidance.LLMatcher:
        """The pristine matcher for ``constraint`` (copy it before use): from the cache when it is there, else
        compiled in this thread and cached (benchmarks and tests; requests go through ``rows``)."""
        key = (constraint.kind, constraint.spec)
        with self._lock:
            cached = self._cache.get(key)
        if cached is None:
            cached = self._run(key, constraint, _Compile())
        if isinstance(cached, InvalidParameters):
            raise InvalidParameters(cached.message, param=constraint.param)
        return cached

    def _compile(self, constraint: Constraint) -> llguidance.LLMatcher | InvalidParameters:
        if len(constraint.spec) > MAX_SPEC_CHARS:
            return InvalidParameters(f"the {constraint.kind} constraint is longer than {MAX_SPEC_CHARS} characters",
                                     param=constraint.param)
        try:
            grammar = _grammar(constraint)
        except ValueError as exc:
            return InvalidParameters(f"invalid {constraint.kind}: {exc}", param=constraint.param)
        try:
            matcher = llguidance.LLMatcher(self.tokenizer, grammar, log_level=0)
        except (ValueError, RuntimeError) as exc:  # documented not to raise for a bad grammar, but be sure
            return InvalidParameters(f"invalid {constraint.kind}: {_first_line(str(exc))}", param=constraint.param)
        if matcher.is_error():
            return InvalidParameters(f"invalid {constraint.kind}: {_first_line(matcher.get_error())}",
                                     param=constraint.param)
        return matcher

    def _first_phase(self, prompt_ids: Sequence[int]) -> Phase:
        if self.think is None:
            return "guided"
        opened, closed = self.think
        last_open = max((i for i, token in enumerate(prompt_ids) if token == opened), default=-1)
        last_close = max((i for i, token in enumerate(prompt_ids) if token == closed), default=-1)
        if last_open > last_close:
            return "thinking"
        return "opening"


_executor: llguidance.LLExecutor | None = None


def mask_logits(logits: torch.Tensor, rows: list[tuple[int, GuidedRow]]) -> list[int]:
    """Set to -inf, in place, what each listed row's grammar forbids next (``rows`` pairs a row of ``logits``
    with its state; every one of them masks). The masks are computed on the CPU, in parallel across rows, and
    applied where the logits are. Returns the listed rows whose matcher is in error: the caller ends those
    requests (their masks allow nothing)."""
    global _executor
    if _executor is None:  # one pool of mask threads for the process (only the engine thread gets here)
        _executor = llguidance.LLExecutor()
    bitmask = llguidance.torch.allocate_token_bitmask(len(rows), logits.shape[-1])
    llguidance.torch.fill_next_token_bitmask_par(_executor, [(row.matcher, i) for i, (_, row) in enumerate(rows)],
                                                 bitmask)
    for i, (_, row) in enumerate(rows):
        if row.phase == "opening" and row.think is not None:  # the model may start its reasoning block instead
            opened = row.think[0]
            bitmask[i, opened // 32] |= _bit(opened % 32)
    index = torch.tensor([row for row, _ in rows], device=logits.device)
    width = logits.shape[-1]
    if logits.device.type == "cpu":
        logits.index_add_(0, index, _penalties(bitmask, width).to(logits.dtype))
    else:  # the bitmask (1/32 of the rows' size) crosses to the device, and is expanded there
        bits = torch.arange(32, dtype=torch.int32, device=logits.device)
        packed = bitmask.to(logits.device)
        allowed = ((packed[:, :, None] >> bits) & 1).view(len(rows), -1)[:, :width].bool()
        logits[index] = logits[index].masked_fill(~allowed, float("-inf"))
    return [row for row, state in rows if state.matcher.is_error()]


def _penalties(bitmask: torch.Tensor, width: int) -> torch.Tensor:
    """The bitmask (bit ``i`` of word ``w``: token ``32 w + i`` allowed) as float32 rows of 0 (allowed) and -inf
    (forbidden), ``width`` tokens wide, to add to a row's logits. On a CPU core, for 16 rows of a 49k vocabulary,
    ``masked_fill`` over a bit-expanded bool mask took 4 ms a step, this 0.3 ms: a bit becomes a byte (numpy's
    ``unpackbits``), and the byte 1 or 0 becomes 0x00000000 (0.0) or 0xFF800000 (-inf) by integer arithmetic.
    (A +inf logit would become NaN, where ``masked_fill`` gave -inf: the CPU's logits are float32 or bfloat16,
    whose range a model's logits do not overflow; a row with a +inf logit cannot be sampled either way.)"""
    allowed = np.unpackbits(bitmask.numpy().view(np.uint8), axis=1, count=width, bitorder="little")
    return torch.from_numpy(allowed).to(torch.int32).sub_(1).bitwise_and_(NEG_INF_BITS).view(torch.float32)


def _grammar(constraint: Constraint) -> str:
    if constraint.kind == "json_schema":
        return llguidance.LLMatcher.grammar_from_json_schema(constraint.spec, overrides=COMPACT_JSON)
    if constraint.kind == "json_object":
        return llguidance.LLMatcher.grammar_from_json_schema(ANY_OBJECT, overrides=COMPACT_JSON)
    if constraint.kind == "regex":
        return llguidance.LLMatcher.grammar_from_regex(constraint.spec)
    if constraint.kind == "choice":
        try:
            choices = json.loads(constraint.spec)
        except json.JSONDecodeError as exc:
            raise ValueError("choices must be a JSON list of strings") from exc
        if not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c for c in choices):
            raise ValueError("choices must be a non-empty list of non-empty strings")
        return llguidance.LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in choices))
    return llguidance.LLMatcher.grammar_from_lark(constraint.spec)


def _think_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int] | None:
    """The reasoning block's delimiters, where both are single tokens and the chat template uses them."""
    vocabulary = tokenizer.get_vocab()
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    if THINK_OPEN in vocabulary and THINK_CLOSE in vocabulary and THINK_OPEN in (template or ""):
        return vocabulary[THINK_OPEN], vocabulary[THINK_CLOSE]
    return None


def _bit(position: int) -> int:
    """Bit ``position`` of an int32 word, as a Python int that fits one (bit 31 is the sign)."""
    return -(1 << 31) if position == 31 else 1 << position


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "rejected by the grammar compiler"
