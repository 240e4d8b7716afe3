"""Projects, conversations and their messages, always scoped to their owner (someone else's id is a 404)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services.chat import prompt as chat_prompt
from api.services.chat.prompt import Prompt
from api.services.chat.turn import Message as TurnMessage
from api.services.chat.turn import TextPart, ToolCall
from api.services.errors import Conflict, InvalidInput, NotFound
from db.models import Conversation, Message, Project
from db.types import utcnow

UNSET: Any = object()  # "not given" for fields where None means "clear it"
TITLE_LENGTH = 60


async def list_projects(session: AsyncSession, owner_id: int, offset: int, limit: int) -> tuple[list[Project], int]:
    query = select(Project).where(Project.owner_id == owner_id)
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = await session.scalars(query.order_by(Project.created_at.desc(), Project.id).offset(offset).limit(limit))
    return list(rows), total


async def get_project(session: AsyncSession, owner_id: int, project_id: uuid.UUID) -> Project:
    project = await session.get(Project, project_id)
    if project is None or project.owner_id != owner_id:
        raise NotFound("no such project", param="project_id", code="project_not_found")
    return project


async def create_project(session: AsyncSession, owner_id: int, **fields: Any) -> Project:
    project = Project(owner_id=owner_id, **fields)
    session.add(project)
    await session.flush()
    return project


def update_fields(row: object, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        if value is not UNSET:
            setattr(row, name, value)


async def delete_project(session: AsyncSession, project: Project) -> None:
    """The project goes; its conversations stay, outside any project."""
    await session.delete(project)


async def list_conversations(session: AsyncSession, owner_id: int, offset: int, limit: int,
                             project_id: uuid.UUID | None = None, q: str | None = None
                             ) -> tuple[list[Conversation], int]:
    """The owner's conversations, most recently active first; ``q`` keeps those whose title contains it, in any
    case."""
    query = select(Conversation).where(Conversation.owner_id == owner_id)
    if project_id is not None:
        query = query.where(Conversation.project_id == project_id)
    if q:
        # Both sides lowered by the database, so they agree on what lower case is (SQLite: ASCII letters only).
        pattern = func.lower(literal(f"%{_like_escaped(q)}%"))
        query = query.where(func.lower(Conversation.title).like(pattern, escape="\\"))
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = await session.scalars(query.order_by(Conversation.updated_at.desc(), Conversation.id)
                                 .offset(offset).limit(limit))
    return list(rows), total


def _like_escaped(text: str) -> str:
    """``text`` matched literally by LIKE: its own ``%`` and ``_`` are not wildcards."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def get_conversation(session: AsyncSession, owner_id: int, conversation_id: uuid.UUID) -> Conversation:
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None or conversation.owner_id != owner_id:
        raise NotFound("no such conversation", param="conversation_id", code="conversation_not_found")
    return conversation


async def create_conversation(session: AsyncSession, owner_id: int, *, title: str | None = None,
                              project_id: uuid.UUID | None = None, model: str | None = None,
                              system_prompt: str | None = None) -> Conversation:
    if project_id is not None:
        await get_project(session, owner_id, project_id)
    conversation = Conversation(owner_id=owner_id, title=title or "New chat", project_id=project_id, model=model,
                                system_prompt=system_prompt)
    session.add(conversation)
    await session.flush()
    return conversation


async def update_conversation(session: AsyncSession, conversation: Conversation, *, title: str = UNSET,
                              project_id: uuid.UUID | None = UNSET, system_prompt: str | None = UNSET
                              ) -> Conversation:
    if project_id is not UNSET and project_id is not None:
        await get_project(session, conversation.owner_id, project_id)
    update_fields(conversation, {"title": title, "project_id": project_id, "system_prompt": system_prompt})
    await session.flush()
    return conversation


async def messages_of(session: AsyncSession, conversation_id: uuid.UUID) -> list[Message]:
    rows = await session.scalars(select(Message).where(Message.conversation_id == conversation_id)
                                 .order_by(Message.id))
    return list(rows)


async def history_of(session: AsyncSession, conversation_id: uuid.UUID) -> list[TurnMessage]:
    """The conversation's turns as the chat core takes them, tool calls and results included."""
    return [turn_message(m) for m in await messages_of(session, conversation_id)]


def turn_message(row: Message) -> TurnMessage:
    calls = tuple(ToolCall(call["id"], call["function"]["name"], call["function"]["arguments"])
                  for call in row.tool_calls or ())
    parts = (TextPart(row.content),) if row.content or not calls else ()
    return TurnMessage(row.role, parts, tool_calls=calls, tool_call_id=row.tool_call_id)  # type: ignore[arg-type]


def unanswered_calls(history: Sequence[TurnMessage]) -> list[str]:
    """The ids of the last assistant turn's tool calls that no tool result after it answers yet."""
    last = next((index for index in range(len(history) - 1, -1, -1) if history[index].role == "assistant"), None)
    if last is None:
        return []
    answered = {message.tool_call_id for message in history[last + 1:] if message.role == "tool"}
    return [call.id for call in history[last].tool_calls if call.id not in answered]


@dataclass(frozen=True)
class Exchange:
    """A new turn (the user's message; over the WebSocket, whatever messages the client sent) and everything the
    model should see with it (system prompt, earlier turns). Planned without writing anything, so a refused
    generation leaves no trace; stored once the generation has started."""

    conversation: Conversation | None  # None: a new conversation will be created
    project_id: uuid.UUID | None
    system_prompt: str | None  # the request's own, which a new conversation keeps
    prompt: Prompt  # its ``new`` is the turn to store


async def plan_exchange(session: AsyncSession, owner_id: int, new: Sequence[TurnMessage], *,
                        conversation_id: uuid.UUID | None, project_id: uuid.UUID | None,
                        system_prompt: str | None) -> Exchange:
    """The turn ``new`` of a conversation (a new one when ``conversation_id`` is None), its system prompt the
    request's, else the conversation's, else its project's."""
    conversation = (await get_conversation(session, owner_id, conversation_id)
                    if conversation_id is not None else None)
    if conversation is not None:
        project_id = conversation.project_id
    project = await get_project(session, owner_id, project_id) if project_id is not None else None
    system = chat_prompt.system_prompt(system_prompt, conversation.system_prompt if conversation else None,
                                       project.system_prompt if project else None)
    history = await history_of(session, conversation.id) if conversation is not None else []
    _check_results(history, new)
    prompt = Prompt.assemble(system, history, new)
    return Exchange(conversation, project_id, system_prompt, prompt)


def _check_results(history: Sequence[TurnMessage], new: Sequence[TurnMessage]) -> None:
    """A tool result in the new turn answers a call of the conversation's last reply, one result per call."""
    waiting = unanswered_calls(history)
    for index, message in enumerate(m for m in new if m.role == "tool"):
        if message.tool_call_id not in waiting:
            raise InvalidInput(f"tool_call_id {message.tool_call_id!r} answers no call of the conversation's last "
                               "reply that is still unanswered", param=f"tool_results[{index}].tool_call_id",
                               code="unknown_tool_call")
        waiting.remove(message.tool_call_id)


async def store_exchange(session: AsyncSession, owner_id: int, exchange: Exchange, model: str) -> Conversation:
    """The new turn written (not committed), into a new conversation titled after its last message if the exchange
    has none."""
    new = exchange.prompt.new
    conversation = exchange.conversation or await create_conversation(
        session, owner_id, title=title_from(new[-1].text), project_id=exchange.project_id, model=model,
        system_prompt=exchange.system_prompt)
    session.add_all(Message(conversation_id=conversation.id, role=message.role, content=message.text,
                            tool_call_id=message.tool_call_id)
                    for message in new)
    conversation.updated_at = utcnow()
    await session.flush()
    return conversation


async def save_reply(sessionmaker: async_sessionmaker[AsyncSession], conversation_id: uuid.UUID, text: str, *,
                     model: str, prompt_tokens: int, completion_tokens: int,
                     tool_calls: list[dict[str, Any]] | None = None) -> None:
    """The assistant's reply: its text and, when it called tools, its calls (OpenAI's shape)."""
    async with sessionmaker() as session:
        session.add(Message(conversation_id=conversation_id, role="assistant", content=text, model=model,
                            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                            tool_calls=tool_calls or None))
        conversation = await session.get(Conversation, conversation_id)
        if conversation is not None:
            conversation.updated_at = utcnow()
        await session.commit()


def title_from(text: str) -> str:
    """A conversation title from its first message: one line, shortened."""
    line = " ".join(text.split())
    return line if len(line) <= TITLE_LENGTH else line[:TITLE_LENGTH - 1] + "…"


def export_json(conversation: Conversation, messages: list[Message]) -> str:
    return json.dumps({
        "id": str(conversation.id), "title": conversation.title, "model": conversation.model,
        "project_id": str(conversation.project_id) if conversation.project_id else None,
        "system_prompt": conversation.system_prompt, "created_at": conversation.created_at.isoformat(),
        "messages": [{"role": m.role, "content": m.content, "model": m.model, "created_at": m.created_at.isoformat(),
                      "prompt_tokens": m.prompt_tokens, "completion_tokens": m.completion_tokens,
                      **({"tool_calls": m.tool_calls} if m.tool_calls else {}),
                      **({"tool_call_id": m.tool_call_id} if m.tool_call_id else {})}
                     for m in messages],
    }, ensure_ascii=False, indent=2)


def export_markdown(conversation: Conversation, messages: list[Message]) -> str:
    lines = [f"# {conversation.title}", "", f"*{conversation.created_at:%Y-%m-%d %H:%M} UTC*"]
    if conversation.system_prompt:
        lines += ["", "## System", "", conversation.system_prompt]
    for message in messages:
        who = message.role.capitalize() + (f" ({message.model})" if message.model else "")
        if message.tool_call_id:
            who += f" (result of {message.tool_call_id})"
        lines += ["", f"## {who}", "", message.content]
        for call in message.tool_calls or ():
            lines += ["", f"Tool call `{call['function']['name']}` ({call['id']}):", "", "```json",
                      call["function"]["arguments"], "```"]
    return "\n".join(lines) + "\n"


async def remove_last_exchange(session: AsyncSession, conversation: Conversation) -> list[Message]:
    """Take back the last user turn and what followed it (its reply), so it can be asked again or differently.

    Regenerating or editing the last turn then leaves one clean history behind, not two answers to one question.
    """
    messages = await messages_of(session, conversation.id)
    last_user = next((index for index in range(len(messages) - 1, -1, -1) if messages[index].role == "user"), None)
    if last_user is None:
        raise Conflict("the conversation has no turn to take back", param="conversation_id",
                       code="no_exchange")
    removed = messages[last_user:]
    for message in removed:
        await session.delete(message)
    conversation.updated_at = utcnow()
    await session.flush()
    return removed
