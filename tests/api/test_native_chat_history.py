"""The native chat continues a conversation longer than the model's context as the WebSocket does: the chat core
trims the oldest exchanges until the prompt fits (before the core, the native chat refused it with a 400). The
real app, tiny model and database, in process."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from api.services.chat import conversations
from api.settings import Settings
from db.models import Message
from tests.api.conftest import MakeUser
from tests.conftest import make_settings
from tests.support.access import USER_PASSWORD, bearer, login


def long_history(exchanges: int) -> list[dict[str, str]]:
    return [message for turn in range(exchanges) for message in (
        {"role": "user", "content": f"Question {turn}: " + "tell me more " * (turn % 5 + 1)},
        {"role": "assistant", "content": f"Answer {turn}: rivers run to the sea."})]


@pytest.fixture
def settings(tmp_path: Path, database_url: str, tiny_model_dir: Path) -> Settings:
    return make_settings(tmp_path / "var", database_url, model_dirs=[tiny_model_dir.parent])


@pytest.fixture
def model_loaded() -> bool:
    return True  # these tests generate with the local model: `app` waits for it


async def test_a_conversation_longer_than_the_context_continues_with_its_newest_exchanges(
        app: FastAPI, client: httpx.AsyncClient, make_user: MakeUser) -> None:
    user = await make_user("longnative")
    history = long_history(60)
    async with app.state.services.sessionmaker() as db:
        conversation = await conversations.create_conversation(db, user.id, title="long", system_prompt="Be brief.")
        db.add_all(Message(conversation_id=conversation.id, role=m["role"], content=m["content"]) for m in history)
        await db.commit()
    token = await login(client, "longnative", USER_PASSWORD)
    reply = await client.post("/v1/chat", headers=bearer(token), json={
        "message": "And the sea?", "conversation_id": str(conversation.id), "temperature": 0, "max_tokens": 4})
    assert reply.status_code == 200, reply.text

    local = app.state.services.model_host.local
    head, new_turn = [{"role": "system", "content": "Be brief."}], [{"role": "user", "content": "And the sea?"}]
    fitting = [dropped for dropped in range(0, len(history) + 1, 2)
               if len(local.encode_messages(head + history[dropped:] + new_turn)) < local.max_context]
    assert 0 < fitting[0] < len(history)  # some exchanges had to go, and some fit
    assert reply.json()["usage"]["prompt_tokens"] == len(local.encode_messages(head + history[fitting[0]:] + new_turn))
    async with app.state.services.sessionmaker() as db:
        stored = await conversations.messages_of(db, conversation.id)
    assert len(stored) == len(history) + 2  # nothing dropped from the conversation itself: only from the prompt
