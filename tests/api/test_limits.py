"""Acceptance 5 of the HTTP API: per-key and per-user limits answer 429 with Retry-After at the configured point."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.api.live import Account, LiveApi

MODEL = "tiny-chat"
HELLO = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}


def chat(live_api: LiveApi, account: Account) -> httpx.Response:
    return httpx.post(f"{live_api.base_url}/v1/chat/completions", json=HELLO, headers=account.headers, timeout=30)


def set_limits(live_api: LiveApi, path: str, **limits: int) -> None:
    answer = httpx.put(f"{live_api.base_url}/admin/{path}/limits", json=limits, headers=live_api.admin)
    assert answer.status_code == 200, answer.text


def within_one_minute(seconds_needed: float = 20) -> None:
    """Per-minute windows are calendar minutes: wait, if need be, so what follows runs inside one (a window that
    rolls over midway would let the request meant to be refused through)."""
    into = time.time() % 60
    if into > 60 - seconds_needed:
        time.sleep(60 - into + 0.1)


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
