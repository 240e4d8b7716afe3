"""Taking back a conversation's last exchange (what the chat's regenerate and edit-last rely on)."""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI

from db.models import Message
from tests.api.conftest import MakeUser, assert_error
from tests.support.access import USER_PASSWORD, bearer, login


async def add_messages(app: FastAPI, conversation_id: str, turns: list[tuple[str, str]]) -> None:
    async with app.state.services.sessionmaker() as session:
        session.add_all([Message(conversation_id=uuid.UUID(conversation_id), role=role, content=content)
                         for role, content in turns])
        await session.commit()


async def test_the_last_exchange_is_taken_back_and_earlier_turns_stay(app: FastAPI, client: httpx.AsyncClient,
                                                                       user_token: str, make_user: MakeUser) -> None:
    me = bearer(user_token)
    conversation = (await client.post("/v1/conversations", json={"title": "Chat"}, headers=me)).json()
    url = f"/v1/conversations/{conversation['id']}"
    await add_messages(app, conversation["id"], [("user", "one"), ("assistant", "first answer"),
                                                 ("user", "two"), ("assistant", "second answer")])

    taken = await client.delete(f"{url}/last-exchange", headers=me)
    assert taken.status_code == 200, taken.text
    assert [(m["role"], m["content"]) for m in taken.json()["removed"]] == [("user", "two"),
                                                                            ("assistant", "second answer")]
    left = (await client.get(url, headers=me)).json()["messages"]
    assert [(m["role"], m["content"]) for m in left] == [("user", "one"), ("assistant", "first answer")]

    # A turn whose reply never came is taken back alone; then the first exchange; then there is nothing left.
    await add_messages(app, conversation["id"], [("user", "unanswered")])
    taken = (await client.delete(f"{url}/last-exchange", headers=me)).json()["removed"]
    assert [m["content"] for m in taken] == ["unanswered"]
    assert len((await client.delete(f"{url}/last-exchange", headers=me)).json()["removed"]) == 2
    assert (await client.get(url, headers=me)).json()["messages"] == []
    assert_error(await client.delete(f"{url}/last-exchange", headers=me), 409, "no_exchange")

    # Someone else's conversation is not there for them.
    await add_messages(app, conversation["id"], [("user", "again"), ("assistant", "answer")])
    await make_user("mallory")
    other = bearer(await login(client, "mallory", USER_PASSWORD))
    assert_error(await client.delete(f"{url}/last-exchange", headers=other), 404, "conversation_not_found")
    assert len((await client.get(url, headers=me)).json()["messages"]) == 2
