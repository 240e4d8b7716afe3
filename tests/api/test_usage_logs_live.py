"""Real requests to a served model show up in the admin's raw usage rows and in the dashboard's overview."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx

from api.services.accounts.credentials import visible_prefix
from tests.support.live import LiveApi

HELLO = {"model": "tiny-chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}


def test_served_requests_are_listed_and_counted(live_api: LiveApi) -> None:
    account = live_api.new_account("logged")
    day = datetime.now(UTC).date()
    before = httpx.get(f"{live_api.base_url}/admin/overview", headers=live_api.admin).json()
    for _ in range(2):
        answer = httpx.post(f"{live_api.base_url}/v1/chat/completions", json=HELLO, headers=account.headers,
                            timeout=30)
        assert answer.status_code == 200, answer.text

    deadline = time.monotonic() + 10
    while True:  # rows are written off the request's path
        page = httpx.get(f"{live_api.base_url}/admin/usage/logs", params={"user_id": account.user_id},
                         headers=live_api.admin).json()
        if page["total"] >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert page["total"] == 2
    for row in page["data"]:
        assert row["username"] == account.username and row["user_id"] == account.user_id
        assert row["api_key_prefix"] == visible_prefix(account.key)
        assert (row["model"], row["status"], row["count_source"]) == ("tiny-chat", "ok", "engine")
        assert row["prompt_tokens"] > 0 and 0 < row["completion_tokens"] <= 3
        assert row["latency_ms"] > 0 and row["ttft_ms"] is not None and row["request_id"]

    after = httpx.get(f"{live_api.base_url}/admin/overview", params={"hours": 2}, headers=live_api.admin).json()
    tokens = sum(row["prompt_tokens"] + row["completion_tokens"] for row in page["data"])
    if datetime.now(UTC).date() == day:  # not across midnight, when "today" starts again
        assert after["today"]["requests"] - before["today"]["requests"] == 2
        assert after["today"]["total_tokens"] - before["today"]["total_tokens"] == tokens
    assert after["users"]["total"] == before["users"]["total"]
    assert after["today"]["latency_p50_ms"] is not None and after["today"]["ttft_p50_ms"] is not None
    assert sum(hour["requests"] for hour in after["series"]) >= 2  # this hour, or the last one just gone

    for path in ("/admin/overview", "/admin/usage/logs"):
        refused = httpx.get(f"{live_api.base_url}{path}", headers=account.headers)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_required"
