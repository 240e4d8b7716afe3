"""Bodies of the native chat endpoints."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field, model_validator

from api.schemas.common import RequestBody


class ToolResult(RequestBody):
    tool_call_id: str = Field(min_length=1, max_length=200, description="The call it answers (the id the reply's "
                              "tool_calls gave it).")
    content: str = Field(max_length=1_000_000, description="What the tool returned, as text (JSON, usually).")


class NativeChatRequest(RequestBody):
    message: str | None = Field(None, min_length=1, description="The user's new turn (optional after "
                                "tool_results).")
    tool_results: list[ToolResult] = Field(
        default_factory=list, max_length=128, description="The results of the tool calls the conversation's last "
        "reply made, one per call; the model answers with them (and the message, when one is given too).")
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
    tools: list[dict[str, Any]] | None = Field(
        None, max_length=128, description="As OpenAI's: [{type: function, function: {name, description, "
        "parameters}}]. The reply's tool_calls name one of them.")
    tool_choice: str | dict[str, Any] | None = Field(
        None, description="none, auto (the default with tools), required, or {type: function, function: {name}}; "
        "required and a named function are enforced by grammar.")
    parallel_tool_calls: bool | None = Field(None, description="Whether the reply may make several calls "
                                             "(default true).")

    @model_validator(mode="after")
    def _says_something(self) -> NativeChatRequest:
        if self.message is None and not self.tool_results:
            raise ValueError("a turn needs a message, tool_results, or both")
        return self
