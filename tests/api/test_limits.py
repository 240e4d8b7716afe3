"""Acceptance 5 of the HTTP API: per-key and per-user limits answer 429 with Retry-After at the configured point."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.support.limits import HELLO, MODEL, set_limits, within_one_minute
from tests.support.live import Account, LiveApi


def chat(live_api: LiveApi, account: Account) -> httpx.Response:
    return httpx.post(f"{live_api.base_url}/v1/chat/completions", json=HELLO, headers=account.headers, timeout=30)


def test_a_keys_request_rate_is_limited_and_others_are_not(live_api: LiveApi) -> None:
    within_one_minute()
    limited, other = live_api.new_account("limited"), live_api.new_account("free")
    set_limits(live_api, f"keys/{limited.key_id}", requests_per_minute=3)
    assert [chat(live_api, limited).status_code for _ in range(3)] == [200, 200, 200]
    refused = chat(live_api, limited)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["error"]["type"] == "rate_limit_exceeded"
    assert [chat(live_api, other).status_code for _ in range(4)] == [200] * 4

    # What the OpenAI client makes of it.
    client = openai.OpenAI(base_url=f"{live_api.base_url}/v1", api_key=limited.key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(**HELLO)  # type: ignore[call-overload]
    assert caught.value.code == "rate_limit_exceeded"
    # The refusals were recorded as such, with no tokens.
    usage = live_api.usage_by_status(limited, expect_requests=5)
    assert usage["ok"]["requests"] == 3 and usage["rejected"]["requests"] == 2
    assert usage["rejected"]["total_tokens"] == 0


def test_a_users_limit_covers_all_their_keys(live_api: LiveApi) -> None:
    within_one_minute()
    user = live_api.new_account("capped")
    set_limits(live_api, f"users/{user.user_id}", requests_per_minute=2)
    assert [chat(live_api, user).status_code for _ in range(3)] == [200, 200, 429]


def test_a_spent_monthly_quota_answers_insufficient_quota(live_api: LiveApi) -> None:
    account = live_api.new_account("quota")
    set_limits(live_api, f"keys/{account.key_id}", monthly_token_quota=10)
    assert chat(live_api, account).status_code == 200  # more than 10 tokens, counted when written
    live_api.usage_by_status(account, expect_requests=1)
    refused = chat(live_api, account)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["type"] == "insufficient_quota"
    assert refused.json()["error"]["code"] == "insufficient_quota"


def test_limits_are_admin_only_and_validated(live_api: LiveApi) -> None:
    account = live_api.new_account("sneaky")
    own = httpx.put(f"{live_api.base_url}/admin/keys/{account.key_id}/limits", json={"requests_per_minute": 1000},
                    headers=account.headers)
    assert own.status_code == 403
    bad = httpx.put(f"{live_api.base_url}/admin/keys/{account.key_id}/limits", json={"requests_per_minute": -1},
                    headers=live_api.admin)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "requests_per_minute"


def test_each_of_n_choices_counts_as_a_request(live_api: LiveApi) -> None:
    within_one_minute()
    account = live_api.new_account("many")
    set_limits(live_api, f"keys/{account.key_id}", requests_per_minute=10)
    refused = httpx.post(f"{live_api.base_url}/v1/chat/completions", json={**HELLO, "n": 16},
                         headers=account.headers, timeout=30)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "16 choices" in refused.json()["error"]["message"]
    assert httpx.post(f"{live_api.base_url}/v1/chat/completions", json={**HELLO, "n": 9},
                      headers=account.headers, timeout=60).status_code == 200
    assert chat(live_api, account).status_code == 200  # the tenth
    assert chat(live_api, account).status_code == 429


def test_concurrent_long_requests_cannot_overshoot_a_token_limit(live_api: LiveApi) -> None:
    """Each request reserves its prompt and max_tokens when admitted: with a window that one request can fill,
    only one of four sent at once runs (counted only when written, all four used to)."""
    within_one_minute(30)
    account = live_api.new_account("tokens")
    set_limits(live_api, f"keys/{account.key_id}", tokens_per_minute=40)
    body = {**HELLO, "max_tokens": 40}
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: httpx.post(f"{live_api.base_url}/v1/chat/completions", json=body,
                                                     headers=account.headers, timeout=60), range(4)))
    assert sorted(answer.status_code for answer in answers) == [200, 429, 429, 429]
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded" and int(refused.headers["Retry-After"]) >= 1


LONG_STORY = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me about the sea."}], "max_tokens": 3000,
              "temperature": 0, "stream": True}


def test_one_users_concurrent_generations_are_capped_and_freed_when_the_client_leaves(live_api: LiveApi) -> None:
    """The default cap is 16 generations a user, counted in choices: one stream with n=16 fills it."""
    busy, other = live_api.new_account("busy"), live_api.new_account("other")
    url = f"{live_api.base_url}/v1/chat/completions"
    with httpx.Client(timeout=60) as streaming, streaming.stream(
            "POST", url, json={**LONG_STORY, "n": 16}, headers=busy.headers) as running:
        assert running.status_code == 200
        stream = running.iter_lines()
        next(stream)  # started, its slots taken (the iterator is kept: dropping it closes the response)
        refused = chat(live_api, busy)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["code"] == "concurrency_limit_exceeded"
        native = httpx.post(f"{live_api.base_url}/v1/chat", headers=busy.headers, timeout=30,
                            json={"model": MODEL, "message": "Hi", "max_tokens": 3})
        assert native.status_code == 429 and native.json()["error"]["code"] == "concurrency_limit_exceeded"
        assert chat(live_api, other).status_code == 200  # someone else is still served
    # The client went away: the generation stops and its slots come back.
    deadline = time.monotonic() + 30
    while (answer := chat(live_api, busy)).status_code == 429 and time.monotonic() < deadline:
        pass
    assert answer.status_code == 200
