"""Choosing the next token of every running sequence from one batch of logits.

Greedy rows without penalties or logprobs take one batched argmax; the others get their penalties, temperature,
top-k and top-p applied row by row and draw from their own seeded generator, so a seed reproduces a sample
whatever else shares the batch.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from engine.logprobs import LogprobRecorder
from engine.requests import SamplingParams


@dataclass
class SamplingState:
    params: SamplingParams
    generator: torch.Generator
    # Every token seen so far (prompt and output), for the repetition penalty, and how often each was output.
    seen: torch.Tensor
    output_counts: dict[int, int] = field(default_factory=dict)
    logprobs: LogprobRecorder | None = None  # when the request asked for them (engine/logprobs.py)

    @classmethod
    def create(cls, params: SamplingParams, prompt_ids: Sequence[int], seed: int | None,
               logprobs: LogprobRecorder | None = None) -> SamplingState:
        generator = torch.Generator()
        generator.manual_seed(seed if seed is not None else secrets.randbits(62))
        return cls(params=params, generator=generator, seen=torch.tensor(sorted(set(prompt_ids)), dtype=torch.long),
                   logprobs=logprobs)

    def record(self, token_id: int) -> None:
        if self.logprobs is not None:
            self.logprobs.accept(token_id)
        self.output_counts[token_id] = self.output_counts.get(token_id, 0) + 1
        if self.params.repetition_penalty != 1:
            self.seen = torch.cat([self.seen, torch.tensor([token_id])]).unique()


def choose_tokens(logits: torch.Tensor, states: Sequence[SamplingState]) -> list[int | Exception]:
    """The next token for each row of ``logits`` (shape [rows, vocab], on the model's device). A row whose sampling
    raises gets the exception in place of a token: one request's failure stays its own, the batch goes on.

    The argmax runs where the logits are, and only the rows that sample come to the CPU (in float32, for their
    own seeded generators): on a GPU, copying every row's logits back (12.6 MB a step at 64 rows of a 49k
    vocabulary) and taking the argmax on the host would cost more than the step itself."""
    chosen: list[int | Exception] = logits.argmax(dim=-1).tolist()
    for row, state in enumerate(states):
        if state.params.greedy and not state.params.penalised and state.logprobs is None:
            continue
        try:
            chosen[row] = _choose_one(logits[row].float().cpu(), state)
        except Exception as exc:  # noqa: BLE001 (handed back to the scheduler, which ends that request)
            chosen[row] = exc
    return chosen


def _choose_one(logits: torch.Tensor, state: SamplingState) -> int:
    params = state.params
    scores = _penalised(logits.clone(), state)
    if params.greedy:
        token = int(scores.argmax())
    else:
        # Shifted so the best score is 0 before dividing: a tiny temperature then gives -inf, never inf - inf.
        token = _sample((scores - scores.max()) / params.temperature, params, state.generator)
    if state.logprobs is not None:  # from the final scores, before temperature (engine/logprobs.py says why)
        state.logprobs.observe(scores, token)
    return token


def _penalised(scores: torch.Tensor, state: SamplingState) -> torch.Tensor:
    params = state.params
    if params.repetition_penalty != 1 and state.seen.numel():
        picked = scores[state.seen]
        scores[state.seen] = torch.where(picked > 0, picked / params.repetition_penalty,
                                         picked * params.repetition_penalty)
    if state.output_counts and (params.presence_penalty or params.frequency_penalty):
        ids = torch.tensor(list(state.output_counts))
        counts = torch.tensor(list(state.output_counts.values()), dtype=scores.dtype)
        scores[ids] -= params.presence_penalty + params.frequency_penalty * counts
    return scores


def _sample(scores: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    if params.top_k and params.top_k < scores.numel():
        threshold = torch.topk(scores, params.top_k).values[-1]
        scores = scores.masked_fill(scores < threshold, float("-inf"))
    probabilities = torch.softmax(scores, dim=-1)
    if params.top_p < 1:
        sorted_probs, order = probabilities.sort(descending=True)
        # Keep the smallest set whose mass reaches top_p (the token that crosses it included).
        outside = sorted_probs.cumsum(0) - sorted_probs >= params.top_p
        outside[0] = False  # the likeliest token always stays: a top_p of 5e-324 is 0 in float32
        sorted_probs[outside] = 0
        probabilities = torch.zeros_like(probabilities).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probabilities, 1, generator=generator))
