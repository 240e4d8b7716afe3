"""Acceptance 2 and 3 of the HTTP API: the native chat, its resumable SSE stream, cancels, and saved conversations."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.api.conftest import LIVE_RESUME_WINDOW_S
from tests.support.live import Account, LiveApi, start_server, wait_ready
from tests.support.sse import Event, events_of


@contextlib.contextmanager
def stream(live_api: LiveApi, account: Account, body: dict, headers: dict[str, str] | None = None
           ) -> Iterator[httpx.Response]:
    """POST /v1/chat/stream, read as it comes; leaving the block drops the connection."""
    with httpx.stream("POST", f"{live_api.base_url}/v1/chat/stream", json=body, timeout=60,
                      headers={**account.headers, **(headers or {})}) as response:
        assert response.status_code == 200, response.read()
        yield response


GREEDY = {"message": "Write about rivers.", "temperature": 0, "max_tokens": 60}


def texts(events: list[Event]) -> str:
    return "".join(event.data["text"] for event in events if event.event == "token")


def test_a_dropped_stream_resumes_where_it_left_off(live_api: LiveApi) -> None:
    account = live_api.new_account("resumer")
    with stream(live_api, account, GREEDY) as whole:
        uninterrupted = list(events_of(whole))
    assert [event.event for event in uninterrupted][:1] == ["start"]
    assert [event.event for event in uninterrupted][-2:] == ["metrics", "done"]

    with stream(live_api, account, GREEDY) as first:
        head = []
        for event in events_of(first):
            head.append(event)
            if len(head) == 5:
                break
    with stream(live_api, account, GREEDY, headers={"Last-Event-ID": head[-1].id}) as again:
        rest = list(events_of(again))
    received = head + rest
    assert [event.seq for event in received] == list(range(1, len(received) + 1))  # none repeated, none missing
    assert len({event.id.rpartition(":")[0] for event in received}) == 1  # one generation, not a new one
    assert texts(received) == texts(uninterrupted)
    assert received[-1].data["usage"] == uninterrupted[-1].data["usage"]

    # The exchange was saved in a new conversation, which the stream named at its start.
    conversation = received[0].data["conversation_id"]
    saved = httpx.get(f"{live_api.base_url}/v1/conversations/{conversation}", headers=account.headers).json()
    assert [(m["role"], m["content"]) for m in saved["messages"]] == [
        ("user", GREEDY["message"]), ("assistant", texts(uninterrupted))]
    # The same stream can be read again from the start by id.
    stream_id = received[0].data["stream_id"]
    with httpx.stream("GET", f"{live_api.base_url}/v1/chat/stream/{stream_id}", headers=account.headers) as replay:
        assert texts(list(events_of(replay))) == texts(uninterrupted)


def test_an_unattached_stream_is_cancelled_after_the_resume_window(live_api: LiveApi) -> None:
    account = live_api.new_account("abandoner")
    with stream(live_api, account, {"message": "Go on and on.", "max_tokens": 3500, "temperature": 0}) as response:
        seen = []
        for event in events_of(response):
            seen.append(event)
            if sum(e.event == "token" for e in seen) == 3:
                break
    left = time.monotonic()
    assert live_api.engine_stats()["running"] == 1  # still generating into its buffer
    live_api.wait_engine_idle(within_s=LIVE_RESUME_WINDOW_S + 3)
    assert time.monotonic() - left >= LIVE_RESUME_WINDOW_S - 0.5
    usage = live_api.usage_by_status(account, expect_requests=1)
    assert set(usage) == {"cancelled"} and usage["cancelled"]["completion_tokens"] >= 3
    # Reattaching later still gets the whole story, ending in a cancelled "done".
    with httpx.stream("GET", f"{live_api.base_url}/v1/chat/stream/{seen[0].data['stream_id']}",
                      headers={**account.headers, "Last-Event-ID": seen[-1].id}) as late:
        rest = list(events_of(late))
    assert rest[-1].event == "done" and rest[-1].data["finish_reason"] == "cancelled"


def test_an_explicit_cancel_stops_the_stream_at_once(live_api: LiveApi) -> None:
    account = live_api.new_account("canceller")
    with stream(live_api, account, {"message": "Tell a long story.", "max_tokens": 3500, "temperature": 0}) as response:
        events = events_of(response)
        start = next(events)
        next(event for event in events if event.event == "token")
        asked = time.monotonic()
        cancel = httpx.post(f"{live_api.base_url}/v1/chat/stream/{start.data['stream_id']}/cancel",
                            headers=account.headers)
        assert cancel.status_code == 200, cancel.text
        rest = list(events)
        ended = time.monotonic() - asked
    assert ended < 1.0
    assert rest[-1].event == "done" and rest[-1].data["finish_reason"] == "cancelled"
    assert live_api.wait_engine_idle(within_s=1.0) < 1.0
    assert set(live_api.usage_by_status(account, expect_requests=1)) == {"cancelled"}


def test_someone_elses_stream_is_not_found(live_api: LiveApi) -> None:
    owner, other = live_api.new_account("owner"), live_api.new_account("other")
    with stream(live_api, owner, {**GREEDY, "max_tokens": 4}) as response:
        start, *_ = list(events_of(response))
    stream_id = start.data["stream_id"]
    assert httpx.get(f"{live_api.base_url}/v1/chat/stream/{stream_id}", headers=other.headers).status_code == 404
    assert httpx.post(f"{live_api.base_url}/v1/chat/stream/{stream_id}/cancel",
                      headers=other.headers).status_code == 404
    refused = httpx.post(f"{live_api.base_url}/v1/chat/stream", json=GREEDY,
                         headers={**owner.headers, "Last-Event-ID": "not-an-id"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "Last-Event-ID"


def test_native_chat_continues_a_conversation(live_api: LiveApi) -> None:
    account = live_api.new_account("talker")
    project = httpx.post(f"{live_api.base_url}/v1/projects", headers=account.headers,
                         json={"name": "Poems", "system_prompt": "You write poems."}).json()
    answered = httpx.post(f"{live_api.base_url}/v1/chat", headers=account.headers, timeout=60,
                          json={"message": "A poem about bees", "project_id": project["id"], "max_tokens": 8})
    assert answered.status_code == 200, answered.text
    first = answered.json()
    answered = httpx.post(f"{live_api.base_url}/v1/chat", headers=account.headers, timeout=60,
                          json={"message": "Another one", "conversation_id": first["conversation_id"],
                                "max_tokens": 8})
    assert answered.status_code == 200, answered.text
    second = answered.json()
    assert second["conversation_id"] == first["conversation_id"]
    # The second turn saw the system prompt and the first exchange: its prompt is longer by all of that.
    assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"] + 5
    saved = httpx.get(f"{live_api.base_url}/v1/conversations/{first['conversation_id']}",
                      headers=account.headers).json()
    assert saved["project_id"] == project["id"]
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant", "user", "assistant"]


def test_another_replica_resumes_keeps_alive_and_cancels_a_stream(live_api: LiveApi, tmp_path: Path) -> None:
    """Two API processes on one database: a stream started on A is resumed on B from the stored events; B's
    follower keeps A from cancelling it as abandoned, and a cancel sent to B stops A's generation."""
    account = live_api.new_account("traveller")
    replica = start_server(tmp_path, live_api.env | {"LLMWS_DATA_DIR": str(tmp_path / "var")}, "replica")
    try:
        wait_ready(replica)
        long_story = {"message": "Tell a long story.", "max_tokens": 3500, "temperature": 0}
        with contextlib.ExitStack() as following:
            with stream(live_api, account, long_story) as first:
                # next(), not a loop with break: closing the reader early would drop A's connection right away.
                first_events = events_of(first)
                head = [next(first_events) for _ in range(4)]
                stream_id = head[0].data["stream_id"]
                # B's follower is in place (B records it before it sends an event) before A's client leaves, so
                # A's resume window is not spent on the reconnect: on a busy machine that alone can take > 2 s.
                resumed = following.enter_context(httpx.stream(
                    "GET", f"{replica.base_url}/v1/chat/stream/{stream_id}", timeout=30,
                    headers={**account.headers, "Last-Event-ID": head[-1].id}))
                events = events_of(resumed)
                rest = [next(events)]
            followed = time.monotonic()
            while time.monotonic() - followed < LIVE_RESUME_WINDOW_S + 1.5:  # past A's resume window
                rest.append(next(events))
            assert live_api.engine_stats()["running"] == 1  # still generating on A: B's client counts
            cancel = httpx.post(f"{replica.base_url}/v1/chat/stream/{stream_id}/cancel", headers=account.headers)
            assert cancel.status_code == 200
            asked = time.monotonic()
            rest += list(events)
            assert time.monotonic() - asked < 2.0
        received = head + rest
        assert [event.seq for event in received] == list(range(1, len(received) + 1))
        assert received[-1].event == "done" and received[-1].data["finish_reason"] == "cancelled"
        live_api.wait_engine_idle(within_s=1.0)
    finally:
        replica.stop()


def test_a_preset_gives_the_system_prompt_and_wraps_the_message(live_api: LiveApi) -> None:
    account = live_api.new_account("preset")
    refused = httpx.post(f"{live_api.base_url}/v1/prompts", headers=account.headers,
                         json={"name": "no slot", "content": "x", "user_template": "Translate this."})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "user_template"  # no {input} slot
    preset = httpx.post(f"{live_api.base_url}/v1/prompts", headers=account.headers, json={
        "name": "French", "content": "You translate into French.", "user_template": "Translate: {input}"}).json()
    answer = httpx.post(f"{live_api.base_url}/v1/chat", headers=account.headers,
                        json={"message": "good morning", "preset_id": preset["id"], "max_tokens": 4}).json()
    saved = httpx.get(f"{live_api.base_url}/v1/conversations/{answer['conversation_id']}",
                      headers=account.headers).json()
    assert saved["system_prompt"] == "You translate into French."
    assert saved["messages"][0]["content"] == "Translate: good morning"
    other = live_api.new_account("preset2")
    hidden = httpx.post(f"{live_api.base_url}/v1/chat", headers=other.headers,
                        json={"message": "hi", "preset_id": preset["id"], "max_tokens": 4})
    assert hidden.status_code == 404  # someone else's personal preset does not exist for you
