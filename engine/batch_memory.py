"""The batch's KV memory planned ahead, so admission keeps the whole batch within a byte budget.

The cache is rectangular: every row is as wide as the widest (left-padded in transformers' path, one slot of the
buffers' width in the static one), so what a batch will hold is its rows times the widest row's final width, not
the sum of its rows. Each row is planned by the columns it spans now and the decode steps it may still take (up to
``max_tokens``, at most to the context limit; a stop string or end token may end it sooner). A prefilling group's
own cache exists beside the batch until it is merged, and a merge empties it layer by layer; so the peak is the
larger of "the batch plus the joining cache" (during the prefill) and "the batch with the new rows" (after).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.static_decode import SlotCache


@dataclass(frozen=True)
class RowPlan:
    span: int  # cache columns from the row's first real token to the newest
    steps: int  # decode steps it may still take, one column each

    @property
    def width(self) -> int:
        return self.span + self.steps


def steps_left(prompt_tokens: int, output_tokens: int, max_tokens: int, max_context: int) -> int:
    """Decode steps a sequence may still take: one per output after those it has. A prefill gives the first
    output; a sequence that joined with all but its last prompt token cached has none yet and steps for each."""
    return max(0, min(max_tokens, max_context - prompt_tokens) - output_tokens)


class BatchMemory:
    def __init__(self, budget_bytes: int | None, bytes_per_token: int, slots: SlotCache | None) -> None:
        self.budget_bytes = budget_bytes
        self.bytes_per_token = bytes_per_token
        self.slots = slots

    def batch_bytes(self, rows: Sequence[RowPlan], *, as_now: bool = True) -> int:
        """The decode path's cache for these rows at their widest (``as_now``: not below what it holds now)."""
        width = max((row.width for row in rows), default=0)
        if self.slots is None:
            return len(rows) * width * self.bytes_per_token
        # A slot is reserved one column past the tokens it holds, for the step that writes there.
        width = max((max(row.width, row.span + 1) for row in rows), default=0)
        if as_now:
            return self.slots.projected_bytes(len(rows), width, self.bytes_per_token)
        return SlotCache.fresh_bytes(len(rows), width, self.slots.max_width, self.bytes_per_token)

    def peak_bytes(self, settled: Sequence[RowPlan], joining: Sequence[RowPlan], joining_tokens: int, *,
                   as_now: bool = True) -> int:
        """The most the cache holds while ``joining`` rows, whose own caches hold ``joining_tokens`` (rows times
        columns), are prefilled beside the ``settled`` batch and then merged into it."""
        during = self.batch_bytes(settled, as_now=as_now) + joining_tokens * self.bytes_per_token
        return max(during, self.batch_bytes([*settled, *joining], as_now=as_now))

    def fits(self, settled: Sequence[RowPlan], joining: Sequence[RowPlan], joining_tokens: int, *,
             as_now: bool = True) -> bool:
        return self.budget_bytes is None or self.peak_bytes(settled, joining, joining_tokens,
                                                            as_now=as_now) <= self.budget_bytes
