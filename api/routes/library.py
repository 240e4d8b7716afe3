"""The caller's projects, conversations (with export) and prompt library."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from api.deps import CurrentPrincipal, SessionDep, current_principal
from api.schemas.library import (
    ConversationCreate,
    ConversationDetail,
    ConversationOut,
    ConversationPage,
    ConversationUpdate,
    MessageOut,
    ProjectCreate,
    ProjectOut,
    ProjectPage,
    ProjectUpdate,
    PromptCreate,
    PromptOut,
    PromptPage,
    PromptUpdate,
)
from api.services.chat import conversations
from api.services.chat import prompt_library as prompts
from api.services.chat.conversations import UNSET

router = APIRouter(prefix="/v1", tags=["library"], dependencies=[Depends(current_principal)])

Offset = Annotated[int, Query(ge=0)]
Limit = Annotated[int, Query(ge=1, le=200)]


def _given(body: object, *names: str) -> dict[str, object]:
    """The fields the client sent (null included, which clears); the others stay as they are."""
    sent = body.model_fields_set  # type: ignore[attr-defined]
    return {name: getattr(body, name) if name in sent else UNSET for name in names}


@router.get("/projects")
async def list_projects(principal: CurrentPrincipal, session: SessionDep, offset: Offset = 0, limit: Limit = 50
                        ) -> ProjectPage:
    rows, total = await conversations.list_projects(session, principal.user.id, offset, limit)
    return ProjectPage(data=[ProjectOut.model_validate(row) for row in rows], offset=offset, limit=limit, total=total)


@router.post("/projects", status_code=201)
async def create_project(body: ProjectCreate, principal: CurrentPrincipal, session: SessionDep) -> ProjectOut:
    return ProjectOut.model_validate(await conversations.create_project(session, principal.user.id,
                                                                        **body.model_dump()))


@router.get("/projects/{project_id}")
async def get_project(project_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep) -> ProjectOut:
    return ProjectOut.model_validate(await conversations.get_project(session, principal.user.id, project_id))


@router.patch("/projects/{project_id}")
async def update_project(project_id: uuid.UUID, body: ProjectUpdate, principal: CurrentPrincipal,
                         session: SessionDep) -> ProjectOut:
    project = await conversations.get_project(session, principal.user.id, project_id)
    changes = _given(body, "name", "description", "system_prompt", "default_model")
    if changes["name"] is None:
        changes["name"] = UNSET  # a project keeps a name
    conversations.update_fields(project, changes)
    await session.flush()
    return ProjectOut.model_validate(project)


@router.delete("/projects/{project_id}", status_code=204)
async def delete_project(project_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep) -> None:
    await conversations.delete_project(session, await conversations.get_project(session, principal.user.id,
                                                                                project_id))


@router.get("/conversations")
async def list_conversations(principal: CurrentPrincipal, session: SessionDep, offset: Offset = 0,
                             limit: Limit = 50, project_id: uuid.UUID | None = None,
                             q: Annotated[str | None, Query(min_length=1, max_length=200,
                                                            description="Titles containing this, in any case.")]
                             = None) -> ConversationPage:
    rows, total = await conversations.list_conversations(session, principal.user.id, offset, limit, project_id, q)
    return ConversationPage(data=[ConversationOut.model_validate(row) for row in rows], offset=offset, limit=limit,
                            total=total)


@router.post("/conversations", status_code=201)
async def create_conversation(body: ConversationCreate, principal: CurrentPrincipal, session: SessionDep
                              ) -> ConversationOut:
    return ConversationOut.model_validate(await conversations.create_conversation(
        session, principal.user.id, **body.model_dump()))


@router.get("/conversations/{conversation_id}")
async def get_conversation(conversation_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep
                           ) -> ConversationDetail:
    conversation = await conversations.get_conversation(session, principal.user.id, conversation_id)
    messages = await conversations.messages_of(session, conversation.id)
    return ConversationDetail.model_validate({**ConversationOut.model_validate(conversation).model_dump(),
                                              "messages": [MessageOut.model_validate(m) for m in messages]})


@router.patch("/conversations/{conversation_id}")
async def update_conversation(conversation_id: uuid.UUID, body: ConversationUpdate, principal: CurrentPrincipal,
                              session: SessionDep) -> ConversationOut:
    conversation = await conversations.get_conversation(session, principal.user.id, conversation_id)
    changes = _given(body, "title", "project_id", "system_prompt")
    if changes["title"] is None:
        changes["title"] = UNSET
    await conversations.update_conversation(session, conversation, **changes)  # type: ignore[arg-type]
    return ConversationOut.model_validate(conversation)


@router.delete("/conversations/{conversation_id}", status_code=204)
async def delete_conversation(conversation_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep) -> None:
    await session.delete(await conversations.get_conversation(session, principal.user.id, conversation_id))


@router.get("/conversations/{conversation_id}/export")
async def export_conversation(conversation_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep,
                              format: Literal["json", "markdown"] = "json") -> Response:  # noqa: A002
    conversation = await conversations.get_conversation(session, principal.user.id, conversation_id)
    messages = await conversations.messages_of(session, conversation.id)
    if format == "markdown":
        body, media, suffix = conversations.export_markdown(conversation, messages), "text/markdown", "md"
    else:
        body, media, suffix = conversations.export_json(conversation, messages), "application/json", "json"
    return Response(body, media_type=f"{media}; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="conversation-{conversation.id}.{suffix}"'})


@router.get("/prompts")
async def list_prompts(principal: CurrentPrincipal, session: SessionDep, offset: Offset = 0, limit: Limit = 50
                       ) -> PromptPage:
    rows, total = await prompts.list_prompts(session, principal, offset, limit)
    return PromptPage(data=[PromptOut.model_validate(row) for row in rows], offset=offset, limit=limit, total=total)


@router.post("/prompts", status_code=201)
async def create_prompt(body: PromptCreate, principal: CurrentPrincipal, session: SessionDep) -> PromptOut:
    return PromptOut.model_validate(await prompts.create_prompt(session, principal, **body.model_dump()))


@router.get("/prompts/{prompt_id}")
async def get_prompt(prompt_id: int, principal: CurrentPrincipal, session: SessionDep) -> PromptOut:
    return PromptOut.model_validate(await prompts.get_prompt(session, principal, prompt_id))


@router.patch("/prompts/{prompt_id}")
async def update_prompt(prompt_id: int, body: PromptUpdate, principal: CurrentPrincipal, session: SessionDep
                        ) -> PromptOut:
    prompt = await prompts.get_prompt(session, principal, prompt_id)
    changes = {name: value for name, value in _given(body, "name", "content", "is_shared").items()
               if value is not None} | _given(body, "user_template")  # a null template turns it back into a prompt
    return PromptOut.model_validate(await prompts.update_prompt(session, principal, prompt, **changes))  # type: ignore[arg-type]


@router.delete("/prompts/{prompt_id}", status_code=204)
async def delete_prompt(prompt_id: int, principal: CurrentPrincipal, session: SessionDep) -> None:
    await prompts.delete_prompt(session, principal, await prompts.get_prompt(session, principal, prompt_id))


@router.delete("/conversations/{conversation_id}/last-exchange")
async def remove_last_exchange(conversation_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep
                               ) -> dict[str, list[MessageOut]]:
    """The last user turn and its reply leave the conversation (for regenerate / edit-last); returns them."""
    conversation = await conversations.get_conversation(session, principal.user.id, conversation_id)
    removed = await conversations.remove_last_exchange(session, conversation)
    return {"removed": [MessageOut.model_validate(message) for message in removed]}
