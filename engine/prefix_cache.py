"""Reuse of the KV cache across requests that start with the same tokens (automatic prefix caching).

Chat traffic repeats itself at the front: every request carries the same system prompt, and each turn of a
conversation re-sends the turns before it. Their keys and values depend only on the tokens before them, so a
request whose prompt begins like an earlier one skips computing that part. On 2 CPU cores a 40-token prompt costs
about as much as a whole decode step of 16 rows, so this is most of what a request joining a running batch costs.

Entries are one row of keys and values per layer for a run of tokens (a prompt, or a finished prompt plus its
answer), kept least-recently-used first and bounded in bytes. Matching compares token arrays, so any shared
prefix counts, not only whole blocks.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from engine.batch_cache import LayerKV


@dataclass(eq=False)
class CachedRun:
    tokens: np.ndarray
    layers: list[LayerKV]

    @property
    def nbytes(self) -> int:
        return sum(keys.nbytes + values.nbytes for keys, values in self.layers)


@dataclass(frozen=True)
class PrefixHit:
    run: CachedRun
    length: int  # how many leading tokens of the prompt the run covers

    def layers(self) -> list[LayerKV]:
        return [(keys[..., :self.length, :], values[..., :self.length, :]) for keys, values in self.run.layers]


class PrefixCache:
    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._runs: OrderedDict[int, CachedRun] = OrderedDict()  # by id(run), least recently used first
        self._bytes = 0
        self.hit_tokens = 0
        self.lookups = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def lookup(self, prompt: list[int]) -> PrefixHit | None:
        """The cached run sharing the longest prefix with ``prompt``, cut so at least its last token is left to
        compute (the model needs a fresh forward over it to predict what comes next). Counted in ``hit_tokens``
        only once used (``record_use``): a request may look and then wait for room in the batch."""
        self.lookups += 1
        if not self._runs or len(prompt) < 2:
            return None
        wanted = np.asarray(prompt, dtype=np.int64)
        best: PrefixHit | None = None
        for run in self._runs.values():
            shared = _shared_prefix(run.tokens, wanted)
            if shared and (best is None or shared > best.length):
                best = PrefixHit(run, shared)
        if best is None:
            return None
        self._runs.move_to_end(id(best.run))
        return PrefixHit(best.run, min(best.length, len(prompt) - 1))

    def record_use(self, hits: list[PrefixHit | None]) -> None:
        self.hit_tokens += sum(hit.length for hit in hits if hit is not None)

    def store(self, tokens: list[int], layers: list[LayerKV]) -> None:
        """Keep these tokens' keys and values; runs they extend are dropped, and a run already covering them is
        only marked as recently used."""
        run_bytes = sum(keys.nbytes + values.nbytes for keys, values in layers)
        if not tokens or run_bytes > self.capacity_bytes:
            return
        wanted = np.asarray(tokens, dtype=np.int64)
        for key, run in list(self._runs.items()):
            shared = _shared_prefix(run.tokens, wanted)
            if shared == len(wanted):
                self._runs.move_to_end(key)
                return
            if shared == len(run.tokens):
                self._drop(key)
        run = CachedRun(wanted, [(keys.contiguous(), values.contiguous()) for keys, values in layers])
        self._runs[id(run)] = run
        self._bytes += run.nbytes
        while self._bytes > self.capacity_bytes:
            self._drop(next(iter(self._runs)))

    def clear(self) -> None:
        self._runs.clear()
        self._bytes = 0

    def _drop(self, key: int) -> None:
        self._bytes -= self._runs.pop(key).nbytes


def _shared_prefix(a: np.ndarray, b: np.ndarray) -> int:
    length = min(len(a), len(b))
    differ = np.flatnonzero(a[:length] != b[:length])
    return int(differ[0]) if differ.size else length
