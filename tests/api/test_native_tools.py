"""Tools on the native chat and the WebSocket (issue 17): the reply's calls in OpenAI's shape (JSON, SSE
``tool_call`` events, WebSocket ``tool_call`` messages), the tool results sent back as the next turn, and both kept
in the conversation. On the tiny random model, where only the grammar of a named ``tool_choice`` makes a call
well-formed."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest
from websockets.sync.client import connect

from tests.api.conftest import assert_error
from tests.support.live import Account, LiveApi
from tests.support.schemas import TOOL_SCHEMAS, TOOLS
from tests.support.sse import events_of
from tests.support.ws import hello, receive, until_done, ws_url

NAMED = {"type": "function", "function": {"name": "add"}}
ASK = {"message": "What is 2 + 3?", "tools": list(TOOLS), "tool_choice": NAMED, "parallel_tool_calls": False,
       "temperature": 1, "seed": 7, "max_tokens": 120, "model": "tiny-chat"}


@pytest.fixture(scope="module")
def account(live_api: LiveApi) -> Account:
    return live_api.new_account("native-tools")


def chat(live_api: LiveApi, account: Account, **body: Any) -> httpx.Response:
    return httpx.post(f"{live_api.base_url}/v1/chat", headers=account.headers, timeout=120, json=body)


def messages_of(live_api: LiveApi, account: Account, conversation_id: str) -> list[dict[str, Any]]:
    detail = httpx.get(f"{live_api.base_url}/v1/conversations/{conversation_id}", headers=account.headers)
    assert detail.status_code == 200, detail.text
    return detail.json()["messages"]


def test_a_native_turn_calls_a_tool_takes_its_result_and_keeps_both(live_api: LiveApi, account: Account) -> None:
    called = chat(live_api, account, **ASK)
    assert called.status_code == 200, called.text
    reply = called.json()
    assert reply["finish_reason"] == "tool_calls"
    [call] = reply["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_") and call["function"]["name"] == "add"
    jsonschema.validate(json.loads(call["function"]["arguments"]), TOOL_SCHEMAS["add"])
    assert "<tool_call>" not in reply["message"]["content"]

    answered = chat(live_api, account, conversation_id=reply["conversation_id"], max_tokens=8, temperature=0,
                    tool_results=[{"tool_call_id": call["id"], "content": "5"}])
    assert answered.status_code == 200, answered.text
    assert answered.json()["finish_reason"] in ("stop", "length")
    assert "tool_calls" not in answered.json()["message"]

    stored = messages_of(live_api, account, reply["conversation_id"])
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[1]["tool_calls"] == [call] and stored[2]["tool_call_id"] == call["id"]
    assert stored[2]["content"] == "5" and stored[3]["content"] == answered.json()["message"]["content"]


def test_the_native_stream_sends_the_calls_the_whole_answer_has(live_api: LiveApi, account: Account) -> None:
    """Same seed: the ``tool_call`` events' pieces concatenate to the JSON answer's arguments."""
    whole = chat(live_api, account, **ASK).json()["message"]["tool_calls"]
    with httpx.stream("POST", f"{live_api.base_url}/v1/chat/stream", headers=account.headers, timeout=120,
                      json=ASK) as response:
        assert response.status_code == 200
        events = list(events_of(response))
    pieces = [event.data for event in events if event.event == "tool_call"]
    assert pieces[0]["index"] == 0 and pieces[0]["name"] == "add" and pieces[0]["id"].startswith("call_")
    assert all("id" not in piece for piece in pieces[1:])
    arguments = "".join(piece["arguments"] for piece in pieces)
    assert arguments == whole[0]["function"]["arguments"]
    done = events[-1]
    assert done.event == "done" and done.data["finish_reason"] == "tool_calls"
    assert done.data["tool_calls"] == [{**whole[0], "id": pieces[0]["id"]}]
    assert not any(event.event == "token" and "<tool_call>" in event.data["text"] for event in events)


def test_tool_results_must_answer_the_last_replys_calls(live_api: LiveApi, account: Account) -> None:
    reply = chat(live_api, account, **ASK).json()
    call_id = reply["message"]["tool_calls"][0]["id"]
    before = messages_of(live_api, account, reply["conversation_id"])
    unknown = chat(live_api, account, conversation_id=reply["conversation_id"],
                   tool_results=[{"tool_call_id": "call_nobody", "content": "5"}])
    assert assert_error(unknown, 400, "unknown_tool_call")["param"] == "tool_results[0].tool_call_id"
    twice = chat(live_api, account, conversation_id=reply["conversation_id"],
                 tool_results=[{"tool_call_id": call_id, "content": "5"}, {"tool_call_id": call_id, "content": "6"}])
    assert assert_error(twice, 400, "unknown_tool_call")["param"] == "tool_results[1].tool_call_id"
    assert messages_of(live_api, account, reply["conversation_id"]) == before  # nothing written
    empty = chat(live_api, account, conversation_id=reply["conversation_id"])
    assert empty.status_code in (400, 422) and "error" in empty.json()
    nameless = chat(live_api, account, message="hi", tools=[{"type": "function", "function": {"name": ""}}])
    assert assert_error(nameless, 400)["param"] == "tools[0].function.name"
    not_offered = chat(live_api, account, message="hi", tools=list(TOOLS),
                       tool_choice={"type": "function", "function": {"name": "nope"}})
    assert assert_error(not_offered, 400)["param"] == "tool_choice"


def test_the_websocket_streams_tool_calls_and_takes_their_results(live_api: LiveApi, account: Account) -> None:
    with connect(ws_url(live_api.base_url)) as ws:
        hello(ws, account)
        ws.send(json.dumps({"type": "inference", "messages": [{"role": "user", "content": "2 + 3?"}],
                            "tools": list(TOOLS), "tool_choice": NAMED, "parallel_tool_calls": False,
                            "config": {"temperature": 1, "seed": 7, "max_tokens": 120, "model": "tiny-chat"}}))
        events = until_done(ws)
        done = events[-1]
        assert done["type"] == "done" and done["finish_reason"] == "tool_calls", done
        [call] = done["tool_calls"]
        pieces = [event for event in events if event["type"] == "tool_call"]
        assert pieces[0]["id"] == call["id"] and pieces[0]["name"] == "add"
        assert "".join(piece["arguments"] for piece in pieces) == call["function"]["arguments"]
        jsonschema.validate(json.loads(call["function"]["arguments"]), TOOL_SCHEMAS["add"])

        ws.send(json.dumps({"type": "inference", "config": {"temperature": 0, "max_tokens": 8},
                            "messages": [{"role": "tool", "tool_call_id": call["id"], "content": "5"}]}))
        answer = until_done(ws)[-1]
        assert answer["type"] == "done" and "tool_calls" not in answer, answer

        ws.send(json.dumps({"type": "inference", "messages": [{"role": "tool", "content": "5"}]}))
        refused = receive(ws)
        assert refused["type"] == "error" and refused["code"] == "missing_field", refused
