"""A WebSocket session's long conversation in the model's context: the turn runs with the newest earlier
exchanges that fit, the oldest dropped first, found by counting each message once (re-tokenizing the whole prompt
per dropped exchange made a long history quadratic). The real app, tiny model and database, in process."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from api.lifespan import AppServices
from api.services.chat import conversations
from api.services.chat.turn import Sampling
from api.settings import Settings
from api.ws import buffer as ws_buffer
from api.ws.hub import LiveSession
from api.ws.inference import RequestIds, run_inference
from db.models import Conversation, Message, WsSession
from tests.api.conftest import MakeUser
from tests.conftest import make_settings


@pytest.fixture
def settings(tmp_path: Path, database_url: str, tiny_model_dir: Path) -> Settings:
    return make_settings(tmp_path / "var", database_url, model_dirs=[tiny_model_dir.parent])


@pytest.fixture
def model_loaded() -> bool:
    return True  # these tests generate with the local model: `app` waits for it


def long_history(exchanges: int) -> list[dict[str, str]]:
    history = []
    for turn in range(exchanges):
        history += [{"role": "user", "content": f"Question {turn}: " + "tell me more " * (turn % 5 + 1)},
                    {"role": "assistant", "content": f"Answer {turn}: rivers run to the sea."}]
    return history


async def test_a_long_history_is_trimmed_oldest_first_to_the_most_that_fits(
        app: FastAPI, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch) -> None:
    state = app.state.services
    user = await make_user("longtalk")
    history = long_history(60)
    async with state.sessionmaker() as db:
        row, _ = await ws_buffer.open_session(db, user.id, None)
        conversation = await conversations.create_conversation(db, user.id, title="long", system_prompt=None)
        row.conversation_id = conversation.id
        db.add_all(Message(conversation_id=conversation.id, role=m["role"], content=m["content"]) for m in history)
        await db.commit()
    local = state.model_host.local
    encode = local.encode_messages
    templated: list[int] = []  # how many messages each templating of a prompt held

    def counted(messages: list[dict[str, str]], tools: list[dict[str, object]] | None = None) -> list[int]:
        templated.append(len(messages))
        return encode(messages, tools)

    monkeypatch.setattr(local, "encode_messages", counted)
    new_turn = [{"role": "user", "content": "And the sea?"}]
    live = state.ws_hub.live(row.id, user.id, 0, {}, conversation.id)
    await run_inference(state, live, user.id, None, RequestIds.for_client("long"), None, None, new_turn,
                        Sampling(temperature=0, max_tokens=4))
    events = [event.event for event in live.recent]
    assert [event["type"] for event in events][0] == "start" and events[-1]["type"] == "done", events

    fitting = [dropped for dropped in range(0, len(history) + 1, 2)
               if len(encode(history[dropped:] + new_turn)) < local.max_context]
    assert 0 < fitting[0] < len(history)  # some exchanges had to go, and some fit
    assert events[0]["input_tokens"] == len(encode(history[fitting[0]:] + new_turn))  # the newest that fit
    assert sum(templated) <= 3 * (len(history) + 1)  # linear: not one whole prompt per dropped exchange


async def socket_turn(state: AppServices, user_id: int, conversation_id: uuid.UUID | None, system: str | None = None,
                      model: str | None = None) -> tuple[LiveSession, list[dict[str, Any]]]:
    """One inference in a new session of ``user_id`` (in ``conversation_id``, when given), and its events."""
    async with state.sessionmaker() as db:
        row, _ = await ws_buffer.open_session(db, user_id, None)
        row.conversation_id = conversation_id
        await db.commit()
    live = state.ws_hub.live(row.id, user_id, 0, {}, conversation_id)
    await run_inference(state, live, user_id, None, RequestIds.for_client("turn"), model, system,
                        [{"role": "user", "content": "And the sea?"}], Sampling(temperature=0, max_tokens=4))
    return live, [event.event for event in live.recent]


CONVERSATION, PROJECT, REQUEST = "Be brief.", "Speak French. " * 3, "Be kind. " * 6  # three prompt lengths


@pytest.mark.parametrize(("request_prompt", "conversation_prompt", "project_prompt", "expected"), [
    (None, CONVERSATION, PROJECT, CONVERSATION),
    (None, None, PROJECT, PROJECT),
    (REQUEST, CONVERSATION, PROJECT, REQUEST),
])
async def test_a_turn_takes_the_system_prompt_the_native_chat_would(
        app: FastAPI, make_user: MakeUser, request_prompt: str | None, conversation_prompt: str | None,
        project_prompt: str, expected: str) -> None:
    """The message's (or the session config's) system prompt, else the conversation's, else its project's; the
    turn stored and the conversation touched (before, a later socket turn saw only the message's own)."""
    state = app.state.services
    user = await make_user("prompted")
    history = long_history(1)
    async with state.sessionmaker() as db:
        project = await conversations.create_project(db, user.id, name="p", system_prompt=project_prompt)
        conversation = await conversations.create_conversation(db, user.id, title="t", project_id=project.id,
                                                               system_prompt=conversation_prompt)
        db.add_all(Message(conversation_id=conversation.id, role=m["role"], content=m["content"]) for m in history)
        await db.commit()
        touched_before = conversation.updated_at
    live, events = await socket_turn(state, user.id, conversation.id, system=request_prompt)
    assert events[0]["type"] == "start" and events[-1]["type"] == "done", events

    encode, new_turn = state.model_host.local.encode_messages, [{"role": "user", "content": "And the sea?"}]
    prompts = {p: len(encode([{"role": "system", "content": p}, *history, *new_turn]))
               for p in (CONVERSATION, PROJECT, REQUEST)}
    assert len(set(prompts.values())) == 3  # the prompts' token counts tell them apart
    assert events[0]["input_tokens"] == events[0]["tokens_in"] == prompts[expected]
    async with state.sessionmaker() as db:
        stored = await conversations.messages_of(db, conversation.id)
        touched = (await db.get(Conversation, conversation.id, populate_existing=True)).updated_at  # type: ignore[union-attr]
    assert [m.role for m in stored] == ["user", "assistant", "user", "assistant"]
    assert touched > touched_before
    assert live.conversation_id == conversation.id


async def test_a_refused_turn_leaves_no_conversation_and_a_new_one_records_its_model(
        app: FastAPI, make_user: MakeUser) -> None:
    state = app.state.services
    user = await make_user("refused")
    live, events = await socket_turn(state, user.id, None, model="no-such-model")
    assert [event["type"] for event in events] == ["error"], events
    async with state.sessionmaker() as db:
        assert (await conversations.list_conversations(db, user.id, 0, 10))[1] == 0
    assert live.conversation_id is None

    live, events = await socket_turn(state, user.id, None)
    assert events[-1]["type"] == "done", events
    async with state.sessionmaker() as db:
        rows, total = await conversations.list_conversations(db, user.id, 0, 10)
        session_row = await db.get(WsSession, live.id)
    assert total == 1 and rows[0].model == events[0]["model"] and rows[0].title == "And the sea?"
    assert live.conversation_id == rows[0].id and session_row is not None and session_row.conversation_id == rows[0].id


async def test_a_session_whose_conversation_was_deleted_goes_on_in_a_new_one(app: FastAPI, make_user: MakeUser
                                                                           ) -> None:
    state = app.state.services
    user = await make_user("deleted")
    live, _ = await socket_turn(state, user.id, None)
    first = live.conversation_id
    async with state.sessionmaker() as db:
        await db.delete(await conversations.get_conversation(db, user.id, first))  # type: ignore[arg-type]
        await db.commit()
    await run_inference(state, live, user.id, None, RequestIds.for_client("again"), None, None,
                        [{"role": "user", "content": "Still there?"}], Sampling(temperature=0, max_tokens=4))
    assert live.recent[-1].event["type"] == "done", [event.event for event in live.recent]
    async with state.sessionmaker() as db:
        rows, total = await conversations.list_conversations(db, user.id, 0, 10)
        session_row = await db.get(WsSession, live.id)
    assert total == 1 and rows[0].id == live.conversation_id != first and rows[0].title == "Still there?"
    assert session_row is not None and session_row.conversation_id == rows[0].id
