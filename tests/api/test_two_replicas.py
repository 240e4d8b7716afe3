"""Two `llmws serve` replicas on one PostgreSQL database, behind the test's own round-robin: whichever replica a
request reaches, logins, conversations, WebSocket sessions, rate limits, quotas and usage are the same.

(A native stream started on one replica and resumed and cancelled on the other: test_native_chat.py.)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.support.limits import HELLO, set_limits, within_one_minute
from tests.support.live import Account, LiveApi, Server, start_server, wait_ready
from tests.support.ws import hello, inference, receive, text_of, until_done, ws_url

CACHE_TTL_S = 1  # LLMWS_AUTH_CACHE_TTL of the live servers (tests/api/conftest.py)
# The module's replicas share PostgreSQL only: this overrides the backends `live_api` runs on.
pytestmark = pytest.mark.parametrize("live_api", ["postgres"], indirect=True, scope="module")
PASSWORD = "live-test-password-1"  # what LiveApi.new_account gives its users


class RoundRobin:
    """Each call names the next replica's base URL, as a round-robin load balancer would pick it."""

    def __init__(self, *base_urls: str) -> None:
        self.base_urls = base_urls
        self._next = itertools.cycle(base_urls)

    def __call__(self) -> str:
        return next(self._next)


@pytest.fixture(scope="module")
def other(live_api: LiveApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second replica: the same environment (database, secret key, model), its own data folder."""
    folder = tmp_path_factory.mktemp("replica")
    server = start_server(folder, live_api.env | {"LLMWS_DATA_DIR": str(folder / "var")}, "replica")
    try:
        wait_ready(server)
        yield server
    finally:
        console = server.stop()
        assert "Traceback" not in console, console


def login(base_url: str, account: Account) -> dict[str, str]:
    answer = httpx.post(f"{base_url}/auth/login", json={"username": account.username, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def test_a_login_on_one_replica_chats_on_the_other(live_api: LiveApi, other: Server) -> None:
    account = live_api.new_account("roamer")
    token = login(live_api.base_url, account)
    client = openai.OpenAI(base_url=f"{other.base_url}/v1", api_key=token["Authorization"][7:], max_retries=0)
    answer = client.chat.completions.create(**HELLO)  # type: ignore[call-overload]
    assert answer.choices[0].finish_reason in {"stop", "length"} and answer.usage.completion_tokens > 0
    # A conversation begun on the other replica goes on here.
    first = httpx.post(f"{other.base_url}/v1/chat", headers=token, timeout=30,
                       json={"message": "My name is Ada.", "max_tokens": 4})
    assert first.status_code == 200, first.text
    second = httpx.post(f"{live_api.base_url}/v1/chat", headers=token, timeout=30,
                        json={"message": "Who am I?", "max_tokens": 4,
                              "conversation_id": first.json()["conversation_id"]})
    assert second.status_code == 200, second.text
    saved = httpx.get(f"{other.base_url}/v1/conversations/{first.json()['conversation_id']}", headers=token).json()
    assert [message["role"] for message in saved["messages"]] == ["user", "assistant", "user", "assistant"]
    # A logout on one replica reaches the other within its credential cache's lifetime (5 s by default).
    assert httpx.post(f"{live_api.base_url}/auth/logout", headers=token).status_code == 204
    deadline = time.monotonic() + 10
    while (status := httpx.get(f"{other.base_url}/auth/me", headers=token).status_code) == 200:
        assert time.monotonic() < deadline, "the other replica still accepts a token logged out 10 s ago"
        time.sleep(0.2)
    assert status == 401


def tokens_then_drop(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while sum(event["type"] == "token" for event in seen) < count:
        seen.append(receive(ws))
    return seen


def test_a_websocket_session_moves_between_replicas_mid_answer(live_api: LiveApi, other: Server) -> None:
    account = live_api.new_account("wsroamer")
    with connect(ws_url(live_api.base_url)) as ws:
        hello(ws, account)
        inference(ws, "Tell me about rivers.", max_tokens=120)
        reference = text_of(until_done(ws))
    with connect(ws_url(live_api.base_url)) as ws:
        session_id = hello(ws, account)["session_id"]
        inference(ws, "Tell me about rivers.", max_tokens=120)
        seen = tokens_then_drop(ws, 5)
    # The answer goes on on the first replica; the client comes back through the other one.
    with connect(ws_url(other.base_url)) as ws:
        welcome = hello(ws, account, session_id=session_id, last_seq=seen[-1]["seq"])
        assert welcome["resumed"] is True
        events = until_done(ws, seen)
        assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == "done" and text_of(events) == reference
        # The next turn, on this replica, numbers on from there and sees the first turn.
        inference(ws, "And about lakes?", max_tokens=4)
        second = until_done(ws)
    assert [event["seq"] for event in second] == list(range(len(events) + 1, len(events) + 1 + len(second)))
    assert second[0]["input_tokens"] > events[0]["input_tokens"] + events[-1]["usage"]["completion_tokens"]
    # And back on the first replica (which still holds the session in memory): nothing missed, nothing renumbered.
    with connect(ws_url(live_api.base_url)) as ws:
        welcome = hello(ws, account, session_id=session_id, last_seq=second[-1]["seq"])
        assert welcome["last_seq"] == second[-1]["seq"]
        inference(ws, "And about seas?", max_tokens=4)
        third = until_done(ws)
    assert third[0]["seq"] == second[-1]["seq"] + 1 and third[-1]["type"] == "done"
    with connect(ws_url(other.base_url)) as ws:  # back on the other replica, with what the client has seen
        welcome = hello(ws, account, session_id=session_id, last_seq=third[-1]["seq"])
        assert welcome["last_seq"] == third[-1]["seq"]  # it waited for the first replica's events to be stored
    with connect(ws_url(other.base_url)) as ws:  # then the whole session, from the database, on either replica
        hello(ws, account, session_id=session_id, last_seq=0)
        replayed = [receive(ws) for _ in range(third[-1]["seq"])]
    assert replayed == events + second + third


def chat_status(base_url: str, account: Account) -> int:
    return httpx.post(f"{base_url}/v1/chat/completions", json=HELLO, headers=account.headers, timeout=30).status_code


def native_status(base_url: str, account: Account) -> int:
    return httpx.post(f"{base_url}/v1/chat", json={"message": "Hi", "max_tokens": 2}, headers=account.headers,
                      timeout=30).status_code


def test_rate_limits_are_counted_across_replicas(live_api: LiveApi, other: Server) -> None:
    within_one_minute()
    replicas = RoundRobin(live_api.base_url, other.base_url)
    keyed, capped = live_api.new_account("rrkey"), live_api.new_account("rruser")
    set_limits(live_api, f"keys/{keyed.key_id}", requests_per_minute=4)
    set_limits(live_api, f"users/{capped.user_id}", requests_per_minute=3)
    # Each replica alone would let 4 (3) through; together they let exactly that many through, then refuse on both.
    assert [chat_status(replicas(), keyed) for _ in range(6)] == [200] * 4 + [429, 429]
    assert [native_status(replicas(), capped) for _ in range(5)] == [200] * 3 + [429, 429]


def test_a_quota_spent_on_one_replica_is_spent_on_the_other(live_api: LiveApi, other: Server) -> None:
    account = live_api.new_account("rrquota")
    set_limits(live_api, f"keys/{account.key_id}", monthly_token_quota=10)
    assert chat_status(live_api.base_url, account) == 200  # more than 10 tokens, counted once written
    live_api.usage_by_status(account, expect_requests=1)
    refused = httpx.post(f"{other.base_url}/v1/chat/completions", json=HELLO, headers=account.headers, timeout=30)
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "insufficient_quota"


def test_usage_is_counted_once_whichever_replica_served_it(live_api: LiveApi, other: Server) -> None:
    account = live_api.new_account("rrusage")
    replicas = RoundRobin(live_api.base_url, other.base_url)
    for _ in range(4):
        assert chat_status(replicas(), account) == 200
        assert native_status(replicas(), account) == 200
        with httpx.stream("POST", f"{replicas()}/v1/chat/completions", headers=account.headers, timeout=30,
                          json={**HELLO, "stream": True}) as streamed:
            assert streamed.status_code == 200 and "[DONE]" in streamed.read().decode()
    for base_url in replicas.base_urls:
        with connect(ws_url(base_url)) as ws:
            hello(ws, account)
            ws.send(json.dumps({"type": "inference", "prompt": {"user": "Hi"}, "config": {"max_tokens": 2}}))
            assert until_done(ws)[-1]["type"] == "done"
    expected = 4 * 3 + 2
    usage = live_api.usage_by_status(account, expect_requests=expected)
    assert usage["ok"]["requests"] == expected
    time.sleep(2.5)  # past both replicas' usage flush interval (1 s here): a second copy of a row would show now
    again = live_api.usage_by_status(account, expect_requests=expected)
    assert {status: row["requests"] for status, row in again.items()} == {"ok": expected}
    logs = httpx.get(f"{other.base_url}/admin/usage/logs", params={"user_id": account.user_id},
                     headers=live_api.admin).json()
    assert logs["total"] == expected



def ws_hello(sockets: contextlib.ExitStack, base_url: str, token: str) -> ClientConnection:
    ws = sockets.enter_context(connect(ws_url(base_url)))
    ws.send(json.dumps({"type": "hello", "token": token}))
    assert receive(ws)["type"] == "welcome"
    return ws


def delete_refusal(ws: ClientConnection) -> str:
    ws.send(json.dumps({"type": "delete_model", "model": "no-such-model"}))
    return receive(ws)["code"]  # model_not_found: past the role check


def closed_for(ws: ClientConnection, within_s: float) -> dict[str, Any]:
    """The error a socket gets before the server closes it (its session's events before it skipped)."""
    deadline = time.monotonic() + within_s
    while (event := json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic()))))["type"] != "error":
        pass
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=max(0.1, deadline - time.monotonic()))
    return event


def test_open_sockets_lose_rights_within_the_cache_ttl_on_both_replicas(live_api: LiveApi, other: Server) -> None:
    replicas = (live_api.base_url, other.base_url)
    root_name = f"wsroot-{uuid.uuid4().hex[:8]}"  # a name of its own each run: the module's database persists
    root = httpx.post(f"{live_api.base_url}/admin/users", headers=live_api.admin,
                      json={"username": root_name, "password": PASSWORD, "role": "admin"}).json()
    keyed = live_api.new_account("wsrevoked")
    owner = login(live_api.base_url, keyed)
    with contextlib.ExitStack() as sockets:
        root_account = Account(root["id"], root_name, "", 0)
        admins = [ws_hello(sockets, base_url, login(base_url, root_account)["Authorization"][7:])
                  for base_url in replicas]
        keys = [ws_hello(sockets, base_url, keyed.key) for base_url in replicas]
        assert [delete_refusal(ws) for ws in admins] == ["model_not_found"] * 2
        inference(keys[1], "Tell a long story.", max_tokens=3500)  # on the replica that does not see the revoke
        assert [receive(keys[1])["type"] for _ in range(4)] == ["start", "token", "token", "token"]
        demoted = time.monotonic()
        assert httpx.patch(f"{live_api.base_url}/admin/users/{root['id']}", json={"role": "user"},
                           headers=live_api.admin).status_code == 200
        assert httpx.delete(f"{live_api.base_url}/v1/keys/{keyed.key_id}", headers=owner).status_code == 200
        for ws in admins:
            while (code := delete_refusal(ws)) != "admin_required":
                assert code == "model_not_found" and time.monotonic() - demoted < CACHE_TTL_S + 5
                time.sleep(0.1)
        for ws in keys:  # the quiet one and the generating one alike, without a message from their clients
            error = closed_for(ws, within_s=CACHE_TTL_S + 5 - (time.monotonic() - demoted))
            assert (error["code"], error["reason"]) == ("unauthorized", "invalid_api_key")
        # The revoked key's generation stopped with its socket.
        deadline = time.monotonic() + 10
        while (engine := httpx.get(f"{other.base_url}/admin/resources", headers=live_api.admin).json()["engine"]
               )["running"] or engine["queue_depth"]:
            assert time.monotonic() < deadline, engine
            time.sleep(0.1)
        disabled = time.monotonic()
        assert httpx.patch(f"{live_api.base_url}/admin/users/{root['id']}", json={"is_active": False},
                           headers=live_api.admin).status_code == 200
        for ws in admins:
            error = closed_for(ws, within_s=CACHE_TTL_S + 5 - (time.monotonic() - disabled))
            assert error["code"] == "unauthorized", error
