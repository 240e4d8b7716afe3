"""Admin bodies for the gateway: providers, and model aliases with their deployments."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, HttpUrl

from api.schemas.common import RequestBody

ProviderKind = Literal["openai-compatible", "openai", "vllm", "tgi", "llama.cpp", "lmstudio", "ollama", "llmws"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"

# Sent upstream in an HTTP header: visible ASCII only (no spaces, no line breaks, nothing a header cannot carry).
API_KEY_PATTERN = r"^[\x21-\x7e]*$"


class ModelDefaults(RequestBody):
    system_prompt: str | None = Field(None, max_length=20_000)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)


class ProviderIn(RequestBody):
    name: str = Field(min_length=1, max_length=100, pattern=NAME_PATTERN)
    kind: ProviderKind = "openai-compatible"
    base_url: HttpUrl = Field(description="The upstream's OpenAI base URL, up to and including `/v1`.")
    api_key: str | None = Field(None, min_length=1, max_length=1000, pattern=API_KEY_PATTERN,
                                description="Stored encrypted; never shown.")
    timeout_s: float = Field(60.0, gt=0, le=3600)
    is_active: bool = True


class ProviderPatch(RequestBody):
    name: str | None = Field(None, min_length=1, max_length=100, pattern=NAME_PATTERN)
    kind: ProviderKind | None = None
    base_url: HttpUrl | None = None
    api_key: str | None = Field(None, max_length=1000, pattern=API_KEY_PATTERN,
                                description="An empty string removes the key.")
    timeout_s: float | None = Field(None, gt=0, le=3600)
    is_active: bool | None = None


class DeploymentIn(RequestBody):
    provider_id: int | None = Field(None, description="None: the local engine.")
    upstream_model: str | None = Field(None, min_length=1, max_length=200,
                                       description="The provider's model name (required with a provider); on the "
                                       "local engine, a local model name it must have loaded.")
    context_window: int | None = Field(None, ge=1)
    defaults: ModelDefaults = Field(default_factory=ModelDefaults)
    priority: int = Field(0, ge=0, le=1000)
    is_active: bool = True


class ModelIn(RequestBody):
    name: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)
    description: str | None = Field(None, max_length=500)
    context_window: int | None = Field(None, ge=1)
    defaults: ModelDefaults = Field(default_factory=ModelDefaults)
    allowed_roles: list[Literal["admin", "user"]] | None = None
    allowed_users: list[int] | None = Field(None, max_length=1000)
    is_active: bool = True
    deployments: list[DeploymentIn] = Field(min_length=1, max_length=32)


def defaults_dict(defaults: ModelDefaults) -> dict[str, Any]:
    return defaults.model_dump(exclude_none=True)
