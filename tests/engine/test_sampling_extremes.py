"""Sampling at the edges of what the API accepts: a denormal temperature or top_p picks the likeliest token
instead of failing the engine step (and every request sharing it)."""

from __future__ import annotations

import pytest
import torch

from engine.requests import SamplingParams
from engine.sampling import SamplingState, choose_tokens


@pytest.mark.parametrize("overrides", [{"temperature": 4e-40}, {"temperature": 0.7, "top_p": 5e-324},
                                       {"temperature": 2.0, "top_p": 1e-45, "top_k": 10_025_423_042}])
def test_extreme_parameters_pick_the_likeliest_token(overrides: dict) -> None:
    logits = torch.randn(2, 500, generator=torch.Generator().manual_seed(7))
    states = [SamplingState.create(SamplingParams(**overrides), [1, 2, 3], seed=11) for _ in range(2)]
    assert choose_tokens(logits, states) == logits.argmax(dim=-1).tolist()
