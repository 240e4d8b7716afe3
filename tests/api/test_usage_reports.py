"""Usage aggregates: the caller's own, and an admin's by day, model, user and key, as JSON and CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI

from api.services.usage.writer import UsageRecord
from tests.api.conftest import MakeUser, assert_error
from tests.support.access import bearer


def record(user_id: int | None, model: str, prompt: int, completion: int, status: str = "ok") -> UsageRecord:
    return UsageRecord(request_id="r", user_id=user_id, api_key_id=None, model=model, backend="local",
                       prompt_tokens=prompt, completion_tokens=completion, ttft_ms=10.0, latency_ms=100.0,
                       tokens_per_s=50.0, status=status, count_source="engine")


async def test_usage_aggregates(app: FastAPI, client: httpx.AsyncClient, admin_token: str, user_token: str,
                                make_user: MakeUser) -> None:
    me = (await client.get("/auth/me", headers=bearer(user_token))).json()
    other = await make_user("carol")
    writer = app.state.services.usage_writer
    for item in [record(me["id"], "m1", 10, 5), record(me["id"], "m2", 20, 7), record(other.id, "m1", 1, 1),
                 record(me["id"], "=cmd", 3, 0, "rejected")]:
        writer.record(item)
    await writer.flush()

    mine = (await client.get("/v1/usage", params={"group_by": "model"}, headers=bearer(user_token))).json()
    assert mine["totals"]["requests"] == 3 and mine["totals"]["total_tokens"] == 45
    assert {row["group"]: row["total_tokens"] for row in mine["data"]} == {"m1": 15, "m2": 27, "=cmd": 3}

    admin = bearer(admin_token)
    by_user = (await client.get("/admin/usage", params={"group_by": "user"}, headers=admin)).json()
    assert {row["group"]: row["requests"] for row in by_user["data"]} == {"alice": 3, "carol": 1}
    by_day = (await client.get("/admin/usage", params={"group_by": "day"}, headers=admin)).json()
    assert [row["group"] for row in by_day["data"]] == [datetime.now(UTC).strftime("%Y-%m-%d")]
    assert by_day["data"][0]["total_tokens"] == 47
    by_key = (await client.get("/admin/usage", params={"group_by": "key"}, headers=admin)).json()
    assert by_key["data"][0]["group"] == "(no key)"

    exported = await client.get("/admin/usage", params={"group_by": "model", "format": "csv"}, headers=admin)
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert {row["model"]: int(row["total_tokens"]) for row in rows} == {"m1": 17, "m2": 27, "'=cmd": 3}

    # A period that excludes them.
    before = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    empty = (await client.get("/admin/usage", params={"until": before}, headers=admin)).json()
    assert empty["totals"]["requests"] == 0
    assert_error(await client.get("/admin/usage", headers=bearer(user_token)), 403)
    assert_error(await client.get("/admin/usage", params={"group_by": "colour"}, headers=admin), 400)
