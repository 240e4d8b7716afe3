"""Continuous batching: one worker thread runs the model; sequences join between decode steps and leave when done.

Each loop turn admits waiting sequences while the batch's projected KV memory stays within its budget
(engine/batch_memory.py), feeds one chunk of the admitted group's prompts (left-padded, in a cache of their own,
merged into the running batch after the last chunk), then runs one decode step for every running sequence. A new
request therefore waits for room in memory, never for a particular request to finish, and a long prompt delays
the running ones by one chunk per step. Events go out through each sequence's ``emit`` callback, which the async
side makes thread-safe.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from engine.batch_cache import BatchCache, check_batchable, has_sliding_window
from engine.batch_memory import BatchMemory, RowPlan, steps_left
from engine.constraints import ConstraintViolated, GuidedRow, mask_logits
from engine.errors import EngineStopped, Overloaded, RequestTooLarge
from engine.interface import DecodeMode, EngineStats
from engine.memory import kv_bytes_per_token
from engine.prefill import ChunkedPrefill
from engine.prefix_cache import PrefixCache, PrefixHit
from engine.requests import EngineEvent, ErrorEvent, FinishEvent, FinishReason, TokenEvent, Usage
from engine.sampling import SamplingState, choose_tokens
from engine.static_decode import MIN_WIDTH, SlotCache, StaticDecoder, choose_decode
from engine.text_stream import TextStream

log = logging.getLogger(__name__)

THROUGHPUT_WINDOW_S = 10.0

# After idling, wait this long for more arrivals, so requests sent together are prefilled as one batch.
GATHER_WINDOW_S = 0.005


@dataclass(eq=False)
class Sequence:
    """One choice of one request, as the scheduler tracks it."""

    request_id: str
    index: int
    prompt_ids: list[int]
    sampling: SamplingState
    text: TextStream
    max_tokens: int
    emit: Callable[[EngineEvent], None]
    ignore_eos: bool = False
    guided: GuidedRow | None = None  # the grammar its output must match (engine/constraints.py)
    output_ids: list[int] = field(default_factory=list)
    unsent_from: int = 0  # output_ids[unsent_from:] have not been reported in a TokenEvent yet
    finished: bool = False


@dataclass(frozen=True)
class SchedulerStats(EngineStats):
    steps: int  # model forward passes so far (tests use it to prove no work was done)
    peak_kv_cache_bytes: int = 0  # the most kv_cache_bytes has been, a joining group's own cache included
    kv_budget_bytes: int | None = None  # what the batch's KV cache may hold (None: no cap)
    prefix_cache_bytes: int = 0
    prefix_cached_tokens: int = 0  # prompt tokens taken from the prefix cache instead of computed, so far


def cache_argument(model: PreTrainedModel) -> str:
    """The keyword a model's forward takes its KV cache by: transformers renamed `past_key_values` to `cache`
    (5.2x warns about the old name and drops it in 5.40; older 5.x know only the old one)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class Scheduler:
    def __init__(self, model: PreTrainedModel, *, eos_token_ids: set[int], pad_token_id: int, max_context: int,
                 max_batch_size: int = 32, max_queue: int = 256, prefix_cache_bytes: int = 0,
                 decode: DecodeMode = "auto", kv_budget_bytes: int | None = None,
                 prefill_chunk_tokens: int = 512) -> None:
        self.model = model
        self.eos_token_ids = eos_token_ids
        self.pad_token_id = pad_token_id
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []  # in batch row order
        self._prefilling: list[Sequence] = []  # the group whose prompts are being fed, in ``self._feed``'s rows
        self._feed: ChunkedPrefill | None = None
        check_batchable(model.config)
        self._batch: BatchCache | SlotCache | None = None
        # The decode step: transformers' forward over the batch cache, or the static step over slots (engine/
        # static_decode.py), replayed from CUDA graphs on a GPU.
        self.decode = choose_decode(decode, model)
        per_token = kv_bytes_per_token(model.config, model.dtype)
        if kv_budget_bytes is not None:  # one request alone must fit, beside the static step's smallest buffers
            idle = MIN_WIDTH * per_token if self.decode != "transformers" else 0
            max_context = min(max_context, max(0, kv_budget_bytes - idle) // per_token)
        self.max_context = max_context
        self._slots = SlotCache(model, max_context) if self.decode != "transformers" else None
        self._memory = BatchMemory(kv_budget_bytes, per_token, self._slots)
        self._peak_kv_bytes = 0
        self._static = (StaticDecoder(model, self._slots, graphs=self.decode == "graphs")
                        if self._slots is not None else None)
        self._cache_argument = cache_argument(model)
        self._windowed = has_sliding_window(model.config)
        self._prefix = PrefixCache(prefix_cache_bytes) if prefix_cache_bytes > 0 else None
        self._stopping = False
        self._steps = 0
        self._token_times: deque[tuple[float, int]] = deque()
        self._thread = threading.Thread(target=self._loop, name="llmws-engine", daemon=True)
        self._thread.start()

    # --- called from any thread -------------------------------------------------------------------------------

    def check_fits(self, prompt_tokens: int, n: int, max_tokens: int) -> None:
        """Refuse up front a request that could not run even alone, rather than queue it for ever."""
        if n > self.max_batch_size:
            raise RequestTooLarge(f"n is {n}; this engine decodes at most {self.max_batch_size} sequences together",
                                  param="n")
        rows = [RowPlan(prompt_tokens, steps_left(prompt_tokens, 1, max_tokens, self.max_context))] * n
        if not self._memory.fits([], rows, n * prompt_tokens, as_now=False):
            need = self._memory.peak_bytes([], rows, n * prompt_tokens, as_now=False)
            raise RequestTooLarge(f"{n} choices of a {prompt_tokens}-token prompt with max_tokens {max_tokens} need "
                                  f"{need} bytes of KV cache; the engine has {self._memory.budget_bytes}: lower n or "
                                  "max_tokens", param="n")

    def submit(self, sequences: list[Sequence]) -> None:
        with self._lock:
            if self._stopping:
                raise EngineStopped("the engine is shutting down; retry shortly")
            if len(self._waiting) + len(sequences) > self.max_queue:
                raise Overloaded(len(self._waiting))
            self._waiting.extend(sequences)
            self._wake.notify()

    def cancel(self, request_id: str) -> None:
        """End the request's streams now; its rows leave the batch at the next step."""
        with self._lock:
            for sequence in [*self._waiting, *self._prefilling, *self._running]:
                if sequence.request_id == request_id and not sequence.finished:
                    sequence.finished = True
                    sequence.emit(FinishEvent(request_id, sequence.index, "cancelled", self._usage(sequence)))
            self._waiting = deque(s for s in self._waiting if not s.finished)

    def stats(self) -> SchedulerStats:
        with self._lock:
            now = time.monotonic()
            recent = [count for at, count in self._token_times if now - at <= THROUGHPUT_WINDOW_S]
            batch = self._batch  # read once: the worker replaces it outside the lock
            return SchedulerStats(
                queue_depth=len(self._waiting),
                running=sum(not s.finished for s in [*self._prefilling, *self._running]),
                batch_size=batch.rows if batch else 0, tokens_per_s=sum(recent) / THROUGHPUT_WINDOW_S,
                kv_cache_bytes=self._kv_bytes(), steps=self._steps, peak_kv_cache_bytes=self._peak_kv_bytes,
                kv_budget_bytes=self._memory.budget_bytes,
                prefix_cache_bytes=self._prefix.nbytes if self._prefix else 0,
                prefix_cached_tokens=self._prefix.hit_tokens if self._prefix else 0,
            )

    def end_all(self, message: str = "the engine is shutting down") -> int:
        """End every queued and running request now with an ``engine_stopped`` error (their streams close
        properly); the rows leave the batch at the next step. The engine goes on serving what comes after.
        Returns how many sequences were ended."""
        with self._lock:
            ended = 0
            for sequence in [*self._waiting, *self._prefilling, *self._running]:
                if not sequence.finished:
                    sequence.finished = True
                    sequence.emit(ErrorEvent(sequence.request_id, message, "engine_stopped"))
                    ended += 1
            self._waiting.clear()
            self._wake.notify()
            return ended

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        self.end_all()
        self._thread.join(timeout=30)

    # --- the worker thread ------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._lock:
                idle = not self._running and not self._prefilling
                while not self._stopping and not self._waiting and not self._running and not self._prefilling:
                    self._wake.wait()
                if idle and not self._stopping:
                    deadline = time.monotonic() + GATHER_WINDOW_S
                    while not self._stopping and (left := deadline - time.monotonic()) > 0:
                        self._wake.wait(left)
                if self._stopping:
                    return
            try:
                with torch.inference_mode():
                    self._drop_finished()
                    if self._feed is None and self._waiting:
                        self._admit()
                    if self._feed is not None:
                        self._prefill_chunk()
                        self._drop_finished()  # a cancel during the prefill leaves a row with no token
                    if self._running:
                        self._decode_step()
                        self._note_kv_bytes()
                    self._drop_finished()
            except Exception as exc:  # noqa: BLE001 (a failed step must end its requests, not the engine)
                log.exception("engine step failed; ending the running requests")
                self._fail_all(f"generation failed: {type(exc).__name__}")

    def _admit(self) -> None:
        """Take the requests at the head of the queue, in arrival order and each with all its choices, while the
        batch's projected memory stays within the budget; start prefilling them as one group. What the prefix
        cache holds of a prompt is copied in, not computed; a sequence with only its last prompt token left joins
        at once, without a prefill forward, and that token goes through the next decode step with everybody's."""
        with self._lock:
            waiting = [s for s in self._waiting if not s.finished]
        settled = self._running_plans()
        group: list[Sequence] = []
        group_hits: list[PrefixHit | None] = []
        folded: list[Sequence] = []
        folded_hits: list[PrefixHit | None] = []
        for request in _by_request(waiting):
            if len(self._running) + len(group) + len(folded) + len(request) > self.max_batch_size:
                break
            hits = [self._prefix.lookup(s.prompt_ids) if self._prefix else None for s in request]
            joins_at_once = [bool(hit and hit.length == len(s.prompt_ids) - 1) for s, hit in zip(request, hits,
                                                                                                 strict=True)]
            new_group = group + [s for s, at_once in zip(request, joins_at_once, strict=True) if not at_once]
            new_group_hits = group_hits + [h for h, at_once in zip(hits, joins_at_once, strict=True) if not at_once]
            new_folded = folded + [s for s, at_once in zip(request, joins_at_once, strict=True) if at_once]
            new_folded_hits = folded_hits + [h for h, at_once in zip(hits, joins_at_once, strict=True) if at_once]
            if self._windowed and self._prefix is not None and new_group:
                new_group_hits = self._without_gaps(new_group, new_group_hits)
            if not self._fits(settled, new_group, new_group_hits, new_folded, new_folded_hits):
                if group or folded or self._running:
                    break  # it waits for rows to leave; nothing behind it goes first
                if self._slots is not None and self._slots.slots * self._slots.width > MIN_WIDTH:
                    self._slots.shrink()  # an earlier batch's buffers are all that is in the way
                    if self._fits(settled, new_group, new_group_hits, new_folded, new_folded_hits):
                        group, group_hits, folded, folded_hits = new_group, new_group_hits, new_folded, new_folded_hits
                        continue
                self._refuse(request)  # submitted without check_fits: it would wait for ever
                break
            group, group_hits, folded, folded_hits = new_group, new_group_hits, new_folded, new_folded_hits
        admitted = {id(s) for s in group + folded}
        if not admitted:
            return
        if self._prefix is not None:
            self._prefix.record_use(group_hits + folded_hits)
        with self._lock:
            self._waiting = deque(s for s in self._waiting if id(s) not in admitted)
            # Listed from now on, so cancel, stop and failures reach them mid-prefill.
            self._prefilling = group
            self._running.extend(folded)
        if folded:
            self._join(self._cache_with_prefixes(folded_hits))
        if group:
            joining = self._cache_with_prefixes(group_hits)
            suffixes = [s.prompt_ids[hit.length if hit else 0:] for s, hit in zip(group, group_hits, strict=True)]
            self._feed = ChunkedPrefill(joining, suffixes, self.pad_token_id)

    def _fits(self, settled: list[RowPlan], group: list[Sequence], group_hits: list[PrefixHit | None],
              folded: list[Sequence], folded_hits: list[PrefixHit | None]) -> bool:
        """Whether the batch stays within budget with these sequences joining: the folded ones at once, the
        group after its prefill."""
        folded_widths = [hit.length if hit else 0 for hit in folded_hits]
        folded_plans = [self._plan(s, width, len(s.output_ids)) for s, width in zip(folded, folded_widths,
                                                                                   strict=True)]
        prefixes = [hit.length if hit else 0 for hit in group_hits]
        columns = max((len(s.prompt_ids) - p for s, p in zip(group, prefixes, strict=True)), default=0)
        # The static step copies only real tokens into its slots; transformers' batch keeps the group's padding
        # between a row's cached prefix and the rest of its prompt.
        spans = ([len(s.prompt_ids) for s in group] if self._slots is not None else [p + columns for p in prefixes])
        group_plans = [self._plan(s, span, 1) for s, span in zip(group, spans, strict=True)]
        # The folded rows' copied prefixes join at once, emptied layer by layer as they merge: no transient.
        joining_tokens = len(group) * (max(prefixes, default=0) + columns)
        return self._memory.fits([*settled, *folded_plans], group_plans, joining_tokens)

    def _plan(self, sequence: Sequence, span: int, outputs: int) -> RowPlan:
        return RowPlan(span, steps_left(len(sequence.prompt_ids), outputs, sequence.max_tokens, self.max_context))

    def _running_plans(self) -> list[RowPlan]:
        spans = self._batch.spans() if self._batch is not None else []
        return [self._plan(s, span, len(s.output_ids)) for s, span in zip(self._running, spans, strict=True)]

    def _refuse(self, request: list[Sequence]) -> None:
        with self._lock:
            self._fail_request(request[0], RequestTooLarge("the request does not fit the engine's memory budget"))

    def _prefill_chunk(self) -> None:
        """Feed the group's next chunk of prompt columns (at most ``prefill_chunk_tokens`` tokens, padding
        included); after the last, the rows join the batch with their first tokens."""
        feed = self._feed
        assert feed is not None
        if all(s.finished for s in self._prefilling):  # all cancelled: nothing to finish
            with self._lock:
                self._prefilling = []
            self._feed = None
            return
        input_ids, positions = feed.next_chunk(max(1, self.prefill_chunk_tokens // feed.rows))
        logits = self._forward(input_ids, feed.cache, positions)
        self._note_kv_bytes(feed.cache.nbytes())
        if not feed.done:
            return
        sequences = self._prefilling
        if self._prefix is not None:
            for row, sequence in enumerate(sequences):
                self._prefix.store(sequence.prompt_ids, feed.cache.row_layers(row))
        with self._lock:
            self._running.extend(sequences)
            self._prefilling = []
        self._feed = None
        self._join(feed.cache)
        self._accept(sequences, logits)

    def _without_gaps(self, sequences: list[Sequence], hits: list[PrefixHit | None]) -> list[PrefixHit | None]:
        """Cached prefixes cut so that every row's computed part has the same width. Otherwise a short suffix is
        left-padded between its cached prefix and itself, and a sliding window, which counts cache columns, would
        span fewer real tokens across that gap. The cut-off tokens are computed again instead."""
        width = max(len(s.prompt_ids) - (hit.length if hit else 0) for s, hit in zip(sequences, hits, strict=True))
        kept: list[PrefixHit | None] = []
        for sequence, hit in zip(sequences, hits, strict=True):
            length = max(0, len(sequence.prompt_ids) - width)
            kept.append(PrefixHit(hit.run, length) if hit is not None and length else None)
        return kept

    def _cache_with_prefixes(self, hits: list[PrefixHit | None]) -> BatchCache:
        return BatchCache.from_rows(self.model.config, [hit.layers() if hit else None for hit in hits],
                                    self.model.device)

    def _join(self, joining: BatchCache) -> None:
        if self._slots is not None:
            self._slots.merge(joining)
            self._batch = self._slots
        elif self._batch is None:
            self._batch = joining
        else:
            self._batch.merge(joining)
        self._limit_columns()
        self._note_kv_bytes()

    def _limit_columns(self) -> None:
        """Transformers' batch grows its buffers with room to spare: never past the width the rows will reach."""
        if isinstance(self._batch, BatchCache):
            widest = max((plan.width for plan in self._running_plans()), default=0)
            self._batch.limit_columns(max(widest, self._batch.width))

    def _kv_bytes(self) -> int:
        batch = self._slots or self._batch  # the slots hold their buffers even with no rows
        return batch.nbytes() if batch is not None else 0

    def _note_kv_bytes(self, joining_bytes: int = 0) -> None:
        self._peak_kv_bytes = max(self._peak_kv_bytes, self._kv_bytes() + joining_bytes)

    def _decode_step(self) -> None:
        # A sequence that joined with its prompt cached feeds its last prompt token here.
        last = [s.output_ids[-1] if s.output_ids else s.prompt_ids[-1] for s in self._running]
        if self._static is not None:
            logits = self._static.step(last)
            self._steps += 1
        else:
            assert isinstance(self._batch, BatchCache)
            self._batch.append_column()
            logits = self._forward(torch.tensor(last, dtype=torch.long)[:, None], self._batch,
                                   self._batch.positions())
        self._accept(self._running, logits)

    def _forward(self, input_ids: torch.Tensor, batch: BatchCache, positions: torch.Tensor) -> torch.Tensor:
        output = self.model(input_ids=input_ids.to(self.model.device), attention_mask=batch.mask,
                            position_ids=positions, use_cache=True, logits_to_keep=1,
                            **{self._cache_argument: batch.cache})
        self._steps += 1
        return output.logits[:, -1, :]

    def _accept(self, sequences: list[Sequence], logits: torch.Tensor) -> None:
        broken = self._mask(sequences, logits)
        tokens = choose_tokens(logits, [s.sampling for s in sequences])
        now = time.monotonic()
        with self._lock:
            for row, (sequence, token) in enumerate(zip(sequences, tokens, strict=True)):
                if sequence.finished:
                    continue
                if row in broken:
                    self._fail_request(sequence, ConstraintViolated("the grammar allows no next token"))
                    continue
                if isinstance(token, Exception):
                    self._fail_request(sequence, token)
                    continue
                try:  # per-request work (grammar, sampling state, detokenizing, stop strings): that request's
                    if sequence.guided is not None:
                        sequence.guided.advance(token)
                    sequence.output_ids.append(token)
                    sequence.sampling.record(token)
                    self._emit_token(sequence, token)
                except Exception as exc:  # noqa: BLE001
                    self._fail_request(sequence, exc)
            self._token_times.append((now, len(tokens)))
            while self._token_times and now - self._token_times[0][0] > THROUGHPUT_WINDOW_S:
                self._token_times.popleft()

    def _mask(self, sequences: list[Sequence], logits: torch.Tensor) -> set[int]:
        """Mask, in place, the logits of the rows a grammar guides (none of the others' are touched, so greedy
        rows without one keep the batched argmax and their exact output). Returns the rows whose grammar is in
        error."""
        guided = [(row, s.guided) for row, s in enumerate(sequences)
                  if s.guided is not None and s.guided.masks and not s.finished]
        if not guided:
            return set()
        try:
            return set(mask_logits(logits, guided))  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 (the guided requests end; the others' logits are untouched)
            log.exception("computing the grammar masks failed")
            return {row for row, _ in guided}

    def _emit_token(self, sequence: Sequence, token: int) -> None:
        """Turn one accepted token into text and, when it ends the sequence, a finish event. Holds the lock."""
        if token in self.eos_token_ids and not sequence.ignore_eos:
            self._finish(sequence, "stop", sequence.text.flush())
            return
        piece = sequence.text.push(token)
        if piece.stopped:
            self._finish(sequence, "stop", piece.text)
            return
        if piece.text:
            self._emit_text(sequence, piece.text)
        at_limit = len(sequence.output_ids) >= sequence.max_tokens
        if at_limit or len(sequence.prompt_ids) + len(sequence.output_ids) >= self.max_context:
            self._finish(sequence, "length", sequence.text.flush())

    @staticmethod
    def _emit_text(sequence: Sequence, text: str) -> None:
        ids = tuple(sequence.output_ids[sequence.unsent_from:])
        recorder = sequence.sampling.logprobs
        logprobs = recorder.between(sequence.unsent_from, len(sequence.output_ids)) if recorder is not None else ()
        sequence.unsent_from = len(sequence.output_ids)
        sequence.emit(TokenEvent(sequence.request_id, sequence.index, text, ids, logprobs=logprobs))

    def _finish(self, sequence: Sequence, reason: FinishReason, last_text: str) -> None:
        if last_text:
            self._emit_text(sequence, last_text)
        sequence.finished = True
        sequence.emit(FinishEvent(sequence.request_id, sequence.index, reason, self._usage(sequence),
                                  tuple(sequence.output_ids)))

    @staticmethod
    def _usage(sequence: Sequence) -> Usage:
        return Usage(prompt_tokens=len(sequence.prompt_ids), completion_tokens=len(sequence.output_ids))

    def _drop_finished(self) -> None:
        with self._lock:
            keep = [row for row, sequence in enumerate(self._running) if not sequence.finished]
            if len(keep) == len(self._running):
                return
            leaving = [(row, s) for row, s in enumerate(self._running) if s.finished]
            self._running = [self._running[row] for row in keep]
        self._remember(leaving)
        if not keep:
            self._clear_batch()
        elif self._batch is not None:
            self._batch.keep(keep)
            self._limit_columns()

    def _remember(self, leaving: list[tuple[int, Sequence]]) -> None:
        """Keep finished answers' keys and values: the next turn of a conversation starts with this prompt and
        answer. The last output token was never fed to the model, so it has none."""
        if self._prefix is None or self._batch is None:
            return
        for row, sequence in leaving:
            tokens = sequence.prompt_ids + sequence.output_ids[:-1]
            if sequence.output_ids and self._batch.length(row) == len(tokens):
                self._prefix.store(tokens, self._batch.row_layers(row))

    def _fail_request(self, sequence: Sequence, exc: Exception) -> None:
        """End one request (all its choices) with an error event; the rest of the batch goes on. Holds the lock."""
        log.error("request %s failed in the engine; the rest of the batch goes on", sequence.request_id,
                  exc_info=exc)
        for sibling in [*self._waiting, *self._prefilling, *self._running]:
            if sibling.request_id == sequence.request_id:
                sibling.finished = True
        self._waiting = deque(s for s in self._waiting if not s.finished)
        sequence.emit(ErrorEvent(sequence.request_id, f"generation failed: {type(exc).__name__}",
                                 "generation_failed"))

    def _fail_all(self, message: str) -> None:
        with self._lock:
            for sequence in [*self._prefilling, *self._running]:
                if not sequence.finished:
                    sequence.finished = True
                    sequence.emit(ErrorEvent(sequence.request_id, message, "generation_failed"))
            self._running = []
            self._prefilling = []
        self._feed = None
        self._clear_batch()

    def _clear_batch(self) -> None:
        if self._slots is not None:
            self._slots.keep([])  # the buffers stay (narrowed after a long row), and with them the recorded graphs
        self._batch = None


def _by_request(sequences: list[Sequence]) -> list[list[Sequence]]:
    """The queue cut into requests (a request's choices are submitted together, so they are adjacent)."""
    requests: list[list[Sequence]] = []
    for sequence in sequences:
        if requests and requests[-1][0].request_id == sequence.request_id:
            requests[-1].append(sequence)
        else:
            requests.append([sequence])
    return requests
