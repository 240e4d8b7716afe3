"""Sampling with one precedence for every protocol: what the request set, else the alias's default, else the
model's, else the server's default for the endpoint. Every protocol resolves its sampling here, and nowhere else.

The server's defaults differ by endpoint on purpose: OpenAI documents its own (temperature 1, and 16 tokens for a
plain completion), while the native chat and the WebSocket have always answered with 0.7 and 512 tokens."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from api.services.chat.turn import Sampling
from engine.requests import SamplingParams

NATIVE_DEFAULTS = Sampling(temperature=0.7, max_tokens=512)  # native /v1/chat and the WebSocket
OPENAI_CHAT_DEFAULTS = Sampling(temperature=1.0, max_tokens=512)
OPENAI_COMPLETION_DEFAULTS = Sampling(temperature=1.0, max_tokens=16)  # OpenAI's own default for /v1/completions


def merged(*layers: Sampling | None) -> Sampling:
    """One layer from several, the first that sets a field winning (request, alias, model, server)."""
    result = Sampling()
    for layer in reversed([layer for layer in layers if layer is not None]):
        result = replace(result, **layer.given())
    return result


def resolve(request: Sampling, *, alias: Sampling | None = None, model: Sampling | None = None,
            server: Sampling) -> SamplingParams:
    """The engine's parameters for a request, validated (a bad value raises ``InvalidParameters`` naming it);
    what no layer sets takes the engine's own default."""
    return SamplingParams(**merged(request, alias, model, server).given())


@dataclass(frozen=True)
class AliasDefaults:
    """What a gateway alias sets for requests that do not: sampling, and a system prompt for messages without
    one. A deployment's own defaults go over its alias's (docs/gateway.md): it is the alias, more specifically
    configured."""

    sampling: Sampling
    system_prompt: str | None = None

    @classmethod
    def of(cls, alias_defaults: Mapping[str, Any], deployment_defaults: Mapping[str, Any] | None = None
           ) -> AliasDefaults:
        values = {**alias_defaults, **(deployment_defaults or {})}
        system = values.get("system_prompt")
        return cls(Sampling.from_mapping(values), system if isinstance(system, str) and system else None)
