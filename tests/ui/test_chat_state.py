"""The chat page's view state against the real API (no browser): pickers and preferences, turns saved into one
conversation, regenerate / edit-last taking the last exchange back, new chat, and Stop freeing the engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from tests.ui.stack import UiStack
from ui.client import ApiClient
from ui.views.chat_state import NO_PROJECT, NO_PROMPT, ChatState, Reply

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run in a thread of its own: the session's Playwright browser keeps an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@pytest.fixture
def client(stack: UiStack) -> Iterator[ApiClient]:
    api = ApiClient(stack.api.base_url, stack.token_for(stack.new_user("chat")))
    yield api
    api.close()


def saved_messages(client: ApiClient, conversation_id: str) -> list[dict]:
    """The conversation's messages once its last reply is stored (the server saves it just after the stream)."""
    deadline = time.monotonic() + 5
    while True:
        messages = client.conversation(conversation_id)["messages"]
        if messages[-1]["role"] == "assistant" or time.monotonic() > deadline:
            return messages
        time.sleep(0.1)


async def finished(state: ChatState, message: str) -> Reply:
    replies = [reply async for reply in state.generate(message)]
    assert replies and replies[-1].finished
    return replies[-1]


def test_pickers_offer_what_the_api_has_and_preferences_become_the_defaults(client: ApiClient) -> None:
    prompt = client.create_prompt({"name": "Terse", "content": "Answer briefly."})
    project = client.create_project("Garden")
    client.save_preferences({"default_model": "tiny-chat", "temperature": 0.25, "max_tokens": 77,
                             "system_prompt_id": prompt["id"]})
    state = ChatState(client)
    assert state.load() == []
    label, model = next(iter(state.model_options.items()))
    assert model == "tiny-chat" and "local" in label and "4,096 ctx" in label
    assert state.prompt_options == {NO_PROMPT: None, "Terse": prompt["id"]}
    assert state.project_options == {NO_PROJECT: None, "Garden": project["id"]}
    assert (state.model, state.temperature, state.max_tokens, state.preset_id) == ("tiny-chat", 0.25, 77,
                                                                                  prompt["id"])


def test_turns_go_into_one_conversation_and_the_last_one_can_be_taken_back(client: ApiClient) -> None:
    project = client.create_project("Work")
    state = ChatState(client)
    state.load()
    state.max_tokens, state.temperature, state.project_id = 12, 0.0, project["id"]

    first = run(finished(state, "Hello there"))
    assert first.error is None and first.started and first.finish_reason in ("stop", "length")
    assert first.ttft_ms is not None and first.tokens_per_s is not None
    conversation_id = state.conversation_id
    stored = client.conversation(conversation_id)
    assert stored["project_id"] == project["id"] and stored["title"] == "Hello there"

    run(finished(state, "And again"))
    assert state.conversation_id == conversation_id

    # Edit-last / regenerate: the last exchange leaves the conversation; the text comes back as typed.
    assert run(state.take_back_last()) == "And again"
    messages = client.conversation(conversation_id)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] and messages[0]["content"] == "Hello there"
    assert messages[1]["content"] == first.text
    regenerated = run(finished(state, "And again, differently"))
    assert regenerated.error is None
    messages = saved_messages(client, conversation_id)
    assert [m["content"] for m in messages if m["role"] == "user"] == ["Hello there", "And again, differently"]
    assert messages[-1]["role"] == "assistant"  # the reply is saved, after the new question

    state.new_chat()
    run(finished(state, "A fresh start"))
    assert state.conversation_id not in (None, conversation_id)
    assert [m["content"] for m in client.conversation(state.conversation_id)["messages"]][0] == "A fresh start"


def test_a_refused_turn_reports_the_api_message_and_stores_nothing(client: ApiClient) -> None:
    state = ChatState(client)
    state.load()
    state.model = "no-such-model"
    reply = run(finished(state, "Anyone?"))
    assert not reply.started and "no-such-model" in (reply.error or "")
    assert state.conversation_id is None and not state.generating
    assert client.conversations()["total"] == 0


def test_stop_cancels_the_generation_on_the_server(stack: UiStack, client: ApiClient) -> None:
    state = ChatState(client)
    state.load()
    state.max_tokens = 3000

    async def stopped_early() -> list[Reply]:
        replies = []
        async for reply in state.generate("Tell me a very long story"):
            replies.append(reply)
            if reply.text and state.stream_id is not None and not reply.finished:
                await state.stop()
        return replies

    last = run(stopped_early())[-1]
    assert last.finish_reason == "cancelled" and last.completion_tokens is not None
    assert last.completion_tokens < 3000
    deadline = time.monotonic() + 10
    while True:
        engine = stack.api_get("/admin/resources", stack.admin_token)["engine"]
        if engine["running"] == 0 and engine["queue_depth"] == 0:
            break
        assert time.monotonic() < deadline, engine
        time.sleep(0.2)
