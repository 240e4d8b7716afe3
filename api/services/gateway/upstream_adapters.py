"""Upstream providers behind one adapter per wire format, keyed by the provider's ``kind``.

An adapter does two things for a deployment of its kind: open a request the client sent (a JSON body for an
OpenAI path, forwarded as sent with the model rewritten), and give the engine interface (`engine.interface`) that
native chat and WebSocket sessions generate through. Every kind LLMWS knows today speaks the OpenAI wire format;
a provider with another one (Anthropic's Messages API, say) adds an adapter here and its kinds to `ADAPTERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from api.openai import passthrough
from api.services.gateway.gateway import Deployment
from engine.interface import EngineClient
from engine.upstream import UpstreamModel


class ProviderAdapter(Protocol):
    async def open(self, deployment: Deployment, path: str, body: dict[str, Any], *,
                   stream_usage: bool, raw: passthrough.RawBody | None = None) -> passthrough.Opened:
        """Send ``body`` (or ``raw``'s bytes, when given) to ``path`` of the deployment's provider and read up to
        its first chunk; raises `UpstreamUnavailable` when the deployment fails before that (the router then
        tries the next)."""

    def engine_client(self, deployment: Deployment, count_tokens: Callable[[str], int] | None) -> EngineClient:
        """The deployment's model behind the engine interface."""


class OpenAICompatible:
    """vLLM, TGI, llama.cpp server, LM Studio, Ollama's `/v1`, OpenAI itself, another LLMWS."""

    async def open(self, deployment: Deployment, path: str, body: dict[str, Any], *,
                   stream_usage: bool, raw: passthrough.RawBody | None = None) -> passthrough.Opened:
        return await passthrough.open_stream(deployment, path, body, stream_usage=stream_usage, raw=raw)

    def engine_client(self, deployment: Deployment, count_tokens: Callable[[str], int] | None) -> EngineClient:
        assert deployment.provider is not None
        return UpstreamModel(deployment.provider.upstream, deployment.upstream_model or "", count_tokens)


OPENAI_COMPATIBLE = OpenAICompatible()
ADAPTERS: dict[str, ProviderAdapter] = {kind: OPENAI_COMPATIBLE for kind in (
    "openai-compatible", "openai", "vllm", "tgi", "llama.cpp", "lmstudio", "ollama", "llmws")}


def adapter_for(deployment: Deployment) -> ProviderAdapter:
    """The adapter of the deployment's provider (its kind was checked against `ADAPTERS`' keys when stored)."""
    assert deployment.provider is not None
    return ADAPTERS[deployment.provider.kind]
