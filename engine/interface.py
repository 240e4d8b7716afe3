"""The one interface every generating backend implements (the local model now, upstream providers later)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from engine.requests import EngineEvent, GenerationRequest

# How the local engine runs a decode step (engine/static_decode.py): a setting, so it lives where settings can
# import it without torch.
DecodeMode = Literal["auto", "transformers", "static", "graphs"]
# The local model's weights on the CPU (engine/weights.py); ``auto`` picks one for the CPU it runs on.
WeightFormat = Literal["float32", "bfloat16", "int8", "int4"]
CpuWeights = Literal["auto", "float32", "bfloat16", "int8", "int4"]


@dataclass(frozen=True)
class EngineStats:
    queue_depth: int
    running: int
    batch_size: int
    tokens_per_s: float
    kv_cache_bytes: int


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str


class EngineClient(Protocol):
    def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        """A `StartEvent` once admitted, then events until each choice has finished (or an error event).
        Refusals (bad parameters, a prompt over the context, a full queue) raise before the `StartEvent`."""
        ...

    def abort(self, request_id: str) -> None:
        """Stop a request: its streams end at once, its batch slots free at the next step."""
        ...

    async def check_health(self) -> Health: ...

    def stats(self) -> EngineStats: ...
