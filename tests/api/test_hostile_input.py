"""Hostile bodies on a real server: deep nesting and oversized bodies get a 4xx in the error shape and leave the
server healthy; Unicode edge cases are stored and returned unchanged, or refused with 400 (lone surrogates, which
PostgreSQL text cannot hold), never a 500."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.api.conftest import assert_error
from tests.support.live import LiveApi

ROUTES = ["/v1/chat", "/v1/chat/completions", "/admin/users"]
# RTL override, zero-width joiner, a 4-byte emoji (and a ZWJ emoji sequence), a combining mark.
EDGY = "\u202eabc\u200d \U0001f600 \U0001f469\u200d\U0001f4bb e\u0301"


def healthy(live_api: LiveApi) -> bool:
    return httpx.get(f"{live_api.base_url}/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize("route", ROUTES)
def test_deep_nesting_is_refused(live_api: LiveApi, route: str) -> None:
    depth = 10_000
    for body in ("[" * depth + "]" * depth, '{"message": "hi", "x": ' + "[" * depth + "]" * depth + "}"):
        answer = httpx.post(f"{live_api.base_url}{route}", content=body, headers={
            **live_api.admin, "content-type": "application/json"}, timeout=30)
        assert_error(answer, 400)
    assert healthy(live_api)


def test_deep_nesting_is_refused_on_the_gateway_fast_path_too(live_api: LiveApi) -> None:
    """A key already in the principal cache takes the fast path (api/openai/fast_path.py), which parses the body
    itself: 100,000 nested arrays must get the normal path's 400, not a 500 and a traceback in the log."""
    account = live_api.new_account("nesting")
    depth = 100_000
    for route in ("/v1/chat/completions", "/v1/completions"):
        for body in ("[" * depth + "]" * depth, '{"model": "m", "messages": ' + "[" * depth + "]" * depth + "}"):
            assert httpx.get(f"{live_api.base_url}/v1/models", headers=account.headers).status_code == 200  # cached
            answer = httpx.post(f"{live_api.base_url}{route}", content=body, headers={
                **account.headers, "content-type": "application/json"}, timeout=30)
            assert_error(answer, 400)  # the route's answer (FastAPI cannot parse it either)
    assert healthy(live_api)
    assert "RecursionError" not in live_api.server.console.read_text()


@pytest.mark.parametrize("route", ROUTES)
def test_a_20_mb_body_is_refused(live_api: LiveApi, route: str) -> None:
    body = b'{"message": "' + b"a" * (20 * 1024 * 1024) + b'"}'
    answer = httpx.post(f"{live_api.base_url}{route}", content=body, headers={
        **live_api.admin, "content-type": "application/json"}, timeout=60)
    assert_error(answer, 413, "body_too_large")
    assert healthy(live_api)


def test_unicode_edge_cases_round_trip(live_api: LiveApi) -> None:
    user = live_api.new_account("unicode").headers
    created = httpx.post(f"{live_api.base_url}/v1/conversations", json={"title": EDGY}, headers=user)
    assert created.status_code == 201, created.text
    assert created.json()["title"] == EDGY
    fetched = httpx.get(f"{live_api.base_url}/v1/conversations/{created.json()['id']}", headers=user)
    assert fetched.json()["title"] == EDGY
    prompt = httpx.post(f"{live_api.base_url}/v1/prompts", json={"name": EDGY, "content": EDGY}, headers=user)
    assert prompt.status_code == 201, prompt.text
    stored = httpx.get(f"{live_api.base_url}/v1/prompts/{prompt.json()['id']}", headers=user).json()
    assert (stored["name"], stored["content"]) == (EDGY, EDGY)
    chat = httpx.post(f"{live_api.base_url}/v1/chat", json={"message": EDGY, "max_tokens": 2}, headers=user,
                      timeout=60)
    assert chat.status_code == 200, chat.text
    turns = httpx.get(f"{live_api.base_url}/v1/conversations/{chat.json()['conversation_id']}", headers=user).json()
    assert [message["content"] for message in turns["messages"] if message["role"] == "user"] == [EDGY]


@pytest.mark.parametrize(("route", "field"), [("/v1/conversations", "title"), ("/v1/prompts", "name"),
                                              ("/v1/chat", "message")])
def test_lone_surrogates_are_refused(live_api: LiveApi, route: str, field: str) -> None:
    user = live_api.new_account("surrogate").headers
    extra = {"content": "x"} if route == "/v1/prompts" else {}
    # Written by hand: json.dumps would refuse to encode the lone surrogate the client sends escaped.
    body = json.dumps({field: "SURROGATE", **extra}).replace("SURROGATE", "a\\ud800b")
    answer = httpx.post(f"{live_api.base_url}{route}", content=body, headers={
        **user, "content-type": "application/json"}, timeout=60)
    assert_error(answer, 400)
    assert healthy(live_api)


def test_usernames_outside_the_rule_are_refused(live_api: LiveApi) -> None:
    for name in ("\u202eadmin", "zoe\u200d", "\U0001f600", "a\\ud800"):
        answer = httpx.post(f"{live_api.base_url}/admin/users", headers=live_api.admin,
                            json={"username": name, "password": "long-enough-password"})
        assert_error(answer, 400)


def test_integers_past_64_bits_are_refused(live_api: LiveApi) -> None:
    huge = str(2**80)
    for path, params in [("/v1/keys", {"offset": huge}), ("/admin/keys", {"user_id": huge}),
                         ("/v1/projects", {"offset": huge})]:
        assert_error(httpx.get(f"{live_api.base_url}{path}", params=params, headers=live_api.admin), 400)
    assert_error(httpx.get(f"{live_api.base_url}/admin/users/{huge}", headers=live_api.admin), 400)


def test_a_provider_key_a_header_cannot_carry_is_refused(live_api: LiveApi) -> None:
    answer = httpx.post(f"{live_api.base_url}/admin/providers", headers=live_api.admin,
                        json={"name": "bad-key", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-\u0086x\r\n"})
    assert assert_error(answer, 400)["param"] == "api_key"


def test_405_lists_every_method_of_the_path(live_api: LiveApi) -> None:
    answer = httpx.request("PUT", f"{live_api.base_url}/v1/projects/00000000-0000-0000-0000-000000000000",
                           headers=live_api.admin)
    assert_error(answer, 405, "method_not_allowed")
    assert set(answer.headers["allow"].split(", ")) == {"GET", "PATCH", "DELETE"}
