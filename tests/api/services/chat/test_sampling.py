"""Sampling's one precedence: the request, else the alias (a deployment's own over its alias's), else the model,
else the server's default for the endpoint, else the engine's own; field by field."""

from __future__ import annotations

import pytest

from api.services.chat.sampling import (
    NATIVE_DEFAULTS,
    OPENAI_CHAT_DEFAULTS,
    OPENAI_COMPLETION_DEFAULTS,
    AliasDefaults,
    merged,
    resolve,
)
from api.services.chat.turn import Sampling
from engine.errors import InvalidParameters
from engine.requests import SamplingParams


def test_each_field_comes_from_the_first_layer_that_sets_it() -> None:
    request = Sampling(temperature=0.1)
    alias = Sampling(temperature=0.2, top_p=0.5)
    model = Sampling(temperature=0.3, top_p=0.6, top_k=7)
    server = Sampling(temperature=0.4, top_p=0.7, top_k=8, max_tokens=99)
    params = resolve(request, alias=alias, model=model, server=server)
    assert (params.temperature, params.top_p, params.top_k, params.max_tokens) == (0.1, 0.5, 7, 99)
    assert params.seed is None and params.stop == () and params.n == 1  # no layer: the engine's own defaults


def test_a_request_that_sets_nothing_gets_the_endpoints_server_defaults() -> None:
    assert resolve(Sampling(), server=NATIVE_DEFAULTS) == SamplingParams(temperature=0.7, max_tokens=512)
    assert resolve(Sampling(), server=OPENAI_CHAT_DEFAULTS) == SamplingParams(temperature=1.0, max_tokens=512)
    assert resolve(Sampling(), server=OPENAI_COMPLETION_DEFAULTS).max_tokens == 16


def test_a_zero_the_request_sets_is_its_choice_not_a_gap() -> None:
    params = resolve(Sampling(temperature=0.0, seed=0), alias=Sampling(temperature=0.9, seed=5),
                     server=NATIVE_DEFAULTS)
    assert params.temperature == 0.0 and params.seed == 0


def test_an_alias_default_fills_only_what_the_request_left_unset() -> None:
    alias = AliasDefaults.of({"temperature": 0, "max_tokens": 3, "system_prompt": "Be terse."})
    params = resolve(Sampling(max_tokens=40), alias=alias.sampling, server=OPENAI_CHAT_DEFAULTS)
    assert (params.temperature, params.max_tokens) == (0, 40)
    assert alias.system_prompt == "Be terse."


def test_a_deployments_defaults_go_over_its_aliass() -> None:
    defaults = AliasDefaults.of({"temperature": 0.2, "top_p": 0.5, "system_prompt": "A"},
                                {"temperature": 0.9, "system_prompt": "B"})
    assert (defaults.sampling.temperature, defaults.sampling.top_p, defaults.system_prompt) == (0.9, 0.5, "B")


def test_a_mapping_layer_keeps_only_sampling_and_takes_one_stop_string() -> None:
    layer = Sampling.from_mapping({"model": "m", "system": "s", "stop": "END", "top_k": None, "seed": 4})
    assert layer == Sampling(stop=("END",), seed=4)
    assert Sampling.from_mapping({"stop": ["a", "b"]}).stop == ("a", "b")


def test_merging_layers_is_the_same_precedence() -> None:
    assert merged(Sampling(n=2), None, Sampling(n=3, seed=1)) == Sampling(n=2, seed=1)


def test_a_bad_value_from_any_layer_is_refused_naming_its_field() -> None:
    with pytest.raises(InvalidParameters) as refused:
        resolve(Sampling(), alias=Sampling(temperature=5), server=NATIVE_DEFAULTS)
    assert refused.value.param == "temperature"


def test_exactly_settles_every_field_as_the_engine_parameters_have_it() -> None:
    params = SamplingParams(temperature=0, max_tokens=4, stop=("x",), seed=3)
    assert resolve(Sampling.exactly(params), alias=Sampling(temperature=1, top_k=9), server=NATIVE_DEFAULTS) \
        == params
