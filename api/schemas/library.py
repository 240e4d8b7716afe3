"""Bodies of the projects, conversations and prompt library routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field

from api.schemas.common import RequestBody, ResponseBody


class Page(ResponseBody):
    offset: int
    limit: int
    total: int


class ProjectCreate(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=5000)
    system_prompt: str | None = Field(None, max_length=20_000)
    default_model: str | None = Field(None, max_length=200)


class ProjectUpdate(RequestBody):
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=5000)
    system_prompt: str | None = Field(None, max_length=20_000)
    default_model: str | None = Field(None, max_length=200)


class ProjectOut(ResponseBody):
    id: uuid.UUID
    name: str
    description: str | None
    system_prompt: str | None
    default_model: str | None
    created_at: datetime
    updated_at: datetime


class ProjectPage(Page):
    data: list[ProjectOut]


class ConversationCreate(RequestBody):
    title: str | None = Field(None, min_length=1, max_length=300)
    project_id: uuid.UUID | None = None
    model: str | None = Field(None, max_length=200)
    system_prompt: str | None = Field(None, max_length=20_000)


class ConversationUpdate(RequestBody):
    """Rename (``title``), move (``project_id``; null takes it out of its project) or change the system prompt."""

    title: str | None = Field(None, min_length=1, max_length=300)
    project_id: uuid.UUID | None = None
    system_prompt: str | None = Field(None, max_length=20_000)


class ConversationOut(ResponseBody):
    id: uuid.UUID
    title: str
    project_id: uuid.UUID | None
    model: str | None
    system_prompt: str | None
    created_at: datetime
    updated_at: datetime


class ConversationPage(Page):
    data: list[ConversationOut]


class MessageOut(ResponseBody):
    id: int
    role: str
    content: str
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    tool_calls: list[dict[str, Any]] | None = Field(
        None, description="An assistant turn's tool calls, as OpenAI shapes them: [{id, type, function: {name, "
        "arguments}}].")
    tool_call_id: str | None = Field(None, description="A tool result's (role tool): the call it answers.")
    created_at: datetime


class ConversationDetail(ConversationOut):
    messages: list[MessageOut]


TEMPLATE_DESCRIPTION = "A preset's user message around the chat's input, which goes where `{input}` stands."


class PromptCreate(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    content: str = Field(min_length=1, max_length=20_000)
    is_shared: bool = Field(False, description="Visible to everyone; admins only.")
    user_template: str | None = Field(None, min_length=1, max_length=20_000, pattern=r"\{input\}",
                                      description=TEMPLATE_DESCRIPTION)


class PromptUpdate(RequestBody):
    name: str | None = Field(None, min_length=1, max_length=200)
    content: str | None = Field(None, min_length=1, max_length=20_000)
    is_shared: bool | None = None
    user_template: str | None = Field(None, min_length=1, max_length=20_000, pattern=r"\{input\}",
                                      description=TEMPLATE_DESCRIPTION + " Null removes it.")


class PromptOut(ResponseBody):
    id: int
    owner_id: int | None
    name: str
    content: str
    user_template: str | None
    is_shared: bool
    created_at: datetime
    updated_at: datetime


class PromptPage(Page):
    data: list[PromptOut]
