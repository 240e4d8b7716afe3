"""A WebSocket session's long conversation in the model's context: the turn runs with the newest earlier
exchanges that fit, the oldest dropped first, found by counting each message once (re-tokenizing the whole prompt
per dropped exchange made a long history quadratic). The real app, tiny model and database, in process."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI

from api.services import conversations, ws_buffer
from api.services.ws_inference import RequestIds, run_inference
from api.settings import Settings
from db.models import Message
from engine.requests import SamplingParams
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
    state = app.state
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

    def counted(messages: list[dict[str, str]]) -> list[int]:
        templated.append(len(messages))
        return encode(messages)

    monkeypatch.setattr(local, "encode_messages", counted)
    new_turn = [{"role": "user", "content": "And the sea?"}]
    live = state.ws_hub.live(row.id, user.id, 0, {}, conversation.id)
    await run_inference(state, live, user.id, None, RequestIds.for_client("long"), None, None, new_turn,
                        SamplingParams(temperature=0, max_tokens=4))
    events = [event.event for event in live.recent]
    assert [event["type"] for event in events][0] == "start" and events[-1]["type"] == "done", events

    fitting = [dropped for dropped in range(0, len(history) + 1, 2)
               if len(encode(history[dropped:] + new_turn)) < local.max_context]
    assert 0 < fitting[0] < len(history)  # some exchanges had to go, and some fit
    assert events[0]["input_tokens"] == len(encode(history[fitting[0]:] + new_turn))  # the newest that fit
    assert sum(templated) <= 3 * (len(history) + 1)  # linear: not one whole prompt per dropped exchange
