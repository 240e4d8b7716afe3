"""Bodies of the native chat endpoints."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field

from api.schemas.common import RequestBody


class NativeChatRequest(RequestBody):
    message: str = Field(min_length=1, description="The user's new turn.")
    conversation_id: uuid.UUID | None = Field(None, description="Continue this conversation; default: a new one.")
    project_id: uuid.UUID | None = Field(None, description="For a new conversation: the project it belongs to.")
    model: str | None = Field(None, max_length=200, description="Default: the local model.")
    system_prompt: str | None = Field(None, max_length=20_000)
    preset_id: int | None = Field(None, description="A prompt library entry: its content is the system prompt "
                                  "(unless system_prompt is given) and its user template wraps the message.")
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    max_tokens: int = Field(512, ge=1)
    stop: list[str] = Field(default_factory=list, max_length=8)
    seed: int | None = Field(None, ge=0, lt=2**62)
    repetition_penalty: float = Field(1.0, ge=0.01, le=10, description="Below 0.01 it overflows the scores.")
    presence_penalty: float = Field(0, ge=-2, le=2)
    frequency_penalty: float = Field(0, ge=-2, le=2)
    response_format: dict[str, Any] | None = Field(
        None, description="As OpenAI's: {type: text | json_object} or {type: json_schema, json_schema: {name, "
        "schema, strict}}; enforced by the engine's grammar either way.")
