"""The admin dashboard's overview (accounts, today's traffic, requests per hour) and the raw usage rows, paged
and filtered; both for admins only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI

from api.services.usage.writer import UsageRecord
from db.models import Role, UsageLog
from tests.api.conftest import MakeUser, assert_error
from tests.support.access import bearer


def record(user_id: int | None, *, model: str = "m1", prompt: int = 10, completion: int = 5, status: str = "ok",
           latency_ms: float = 100.0, ttft_ms: float | None = 10.0, backend: str = "local",
           count_source: str = "engine") -> UsageRecord:
    return UsageRecord(request_id=f"req-{model}-{latency_ms}", user_id=user_id, api_key_id=None, model=model,
                       backend=backend, prompt_tokens=prompt, completion_tokens=completion, ttft_ms=ttft_ms,
                       latency_ms=latency_ms, tokens_per_s=25.0, status=status, count_source=count_source)


async def write(app: FastAPI, *records: UsageRecord) -> None:
    for item in records:
        app.state.services.usage_writer.record(item)
    await app.state.services.usage_writer.flush()


async def test_overview_counts_users_today_and_hours(app: FastAPI, client: httpx.AsyncClient, admin_token: str,
                                                     user_token: str, make_user: MakeUser) -> None:
    alice = (await client.get("/auth/me", headers=bearer(user_token))).json()["id"]
    await make_user("root2", role=Role.ADMIN)
    bob = await make_user("bob")
    admin = bearer(admin_token)
    assert (await client.patch(f"/admin/users/{bob.id}", json={"is_active": False}, headers=admin)).status_code == 200

    empty = (await client.get("/admin/overview", headers=admin)).json()
    assert empty["users"] == {"total": 4, "active": 3, "admins": 2}
    assert empty["today"] == {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
                              "errors": 0, "error_rate": 0.0, "latency_p50_ms": None, "latency_p95_ms": None,
                              "ttft_p50_ms": None}
    assert len(empty["series"]) == 24 and all(hour["requests"] == 0 for hour in empty["series"])

    await write(app, *(record(alice, latency_ms=float(ms)) for ms in range(100, 1100, 100)),  # 100 … 1000 ms
                record(alice, status="error", prompt=7, completion=0, latency_ms=2000.0, ttft_ms=None),
                record(alice, status="cancelled", prompt=3, completion=1, latency_ms=50.0, ttft_ms=40.0),
                record(None, status="rejected", prompt=0, completion=0, latency_ms=1.0, ttft_ms=None))
    # One row from hours ago, written as the writer would have then.
    now = datetime.now(UTC)
    current_hour = now.replace(minute=0, second=0, microsecond=0)
    earlier = current_hour - timedelta(hours=2) + timedelta(minutes=30)
    async with app.state.services.sessionmaker() as session:
        session.add(UsageLog(request_id="old", user_id=alice, model="m1", backend="local", prompt_tokens=100,
                             completion_tokens=100, latency_ms=None, status="error", count_source="engine",
                             created_at=earlier))
        await session.commit()

    body = (await client.get("/admin/overview", params={"hours": 3}, headers=admin)).json()
    earlier_today = earlier.date() == now.date()
    today = body["today"]
    assert today["requests"] == 13 + earlier_today
    assert today["prompt_tokens"] == 110 + 100 * earlier_today
    assert today["completion_tokens"] == 51 + 100 * earlier_today
    assert today["total_tokens"] == today["prompt_tokens"] + today["completion_tokens"]
    assert today["errors"] == 1 + earlier_today
    assert today["error_rate"] == round(today["errors"] / today["requests"], 4)
    # Latencies: 50, 100 … 1000, 2000 ms (the rejected row's is left out); ttft: 10 × 10 ms and 40 ms.
    assert (today["latency_p50_ms"], today["latency_p95_ms"], today["ttft_p50_ms"]) == (550.0, 1450.0, 10.0)

    series = body["series"]
    if datetime.now(UTC) < current_hour + timedelta(hours=1):  # no new hour began meanwhile, moving the window
        assert [datetime.fromisoformat(hour["hour"]) for hour in series] == [
            current_hour - timedelta(hours=2), current_hour - timedelta(hours=1), current_hour]
        assert series[0] == {"hour": series[0]["hour"], "requests": 1, "errors": 1, "tokens": 200}
        assert series[1]["requests"] == 0 and series[1]["tokens"] == 0
        assert series[2] == {"hour": series[2]["hour"], "requests": 13, "errors": 1, "tokens": 161}
    assert len((await client.get("/admin/overview", params={"hours": 720}, headers=admin)).json()["series"]) == 720


async def test_overview_is_admin_only_and_checks_hours(client: httpx.AsyncClient, admin_token: str,
                                                       user_token: str) -> None:
    assert_error(await client.get("/admin/overview", headers=bearer(user_token)), 403, "admin_required")
    assert_error(await client.get("/admin/overview"), 401)
    for bad in ("0", "721", "day"):
        error = assert_error(await client.get("/admin/overview", params={"hours": bad}, headers=bearer(admin_token)),
                             400, "invalid_value")
        assert error["param"] == "hours"


async def test_usage_logs_page_filter_and_name_their_user(app: FastAPI, client: httpx.AsyncClient,
                                                          admin_token: str, user_token: str,
                                                          make_user: MakeUser) -> None:
    alice = (await client.get("/auth/me", headers=bearer(user_token))).json()["id"]
    carol = await make_user("carol")
    await write(app, record(alice, model="m1", latency_ms=1.0), record(alice, model="m2", latency_ms=2.0),
                record(carol.id, model="m1", status="error", backend="vllm", latency_ms=3.0),
                record(None, model="m2", status="rejected", count_source="estimated", latency_ms=4.0))
    admin = bearer(admin_token)

    page = (await client.get("/admin/usage/logs", headers=admin)).json()
    assert (page["offset"], page["limit"], page["total"]) == (0, 50, 4)
    assert [row["latency_ms"] for row in page["data"]] == [4.0, 3.0, 2.0, 1.0]  # newest first
    assert set(page["data"][0]) == {"id", "created_at", "request_id", "user_id", "username", "api_key_prefix",
                                    "model", "backend", "prompt_tokens", "completion_tokens", "ttft_ms",
                                    "latency_ms", "tokens_per_s", "status", "count_source"}
    assert [row["username"] for row in page["data"]] == [None, "carol", "alice", "alice"]
    assert all(row["api_key_prefix"] is None for row in page["data"])
    assert datetime.fromisoformat(page["data"][0]["created_at"]).tzinfo is not None

    async def latencies(**params: object) -> tuple[list[float], int]:
        answer = await client.get("/admin/usage/logs", params=params, headers=admin)
        assert answer.status_code == 200, answer.text
        return [row["latency_ms"] for row in answer.json()["data"]], answer.json()["total"]

    assert await latencies(limit=2, offset=1) == ([3.0, 2.0], 4)
    assert await latencies(model="m1") == ([3.0, 1.0], 2)
    assert await latencies(user_id=alice) == ([2.0, 1.0], 2)
    assert await latencies(status="error") == ([3.0], 1)
    assert await latencies(backend="vllm") == ([3.0], 1)
    assert await latencies(count_source="estimated") == ([4.0], 1)
    assert await latencies(model="m1", user_id=alice) == ([1.0], 1)
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (await latencies(since=hour_ago, until=in_an_hour))[1] == 4
    assert await latencies(until=hour_ago) == ([], 0)
    assert await latencies(since=in_an_hour) == ([], 0)

    assert_error(await client.get("/admin/usage/logs", headers=bearer(user_token)), 403, "admin_required")
    for params, param in [({"limit": 0}, "limit"), ({"limit": 501}, "limit"), ({"offset": -1}, "offset"),
                          ({"status": "weird"}, "status"), ({"count_source": "guess"}, "count_source"),
                          ({"user_id": "alice"}, "user_id"), ({"since": "2026-01-01T00:00:00"}, "since"),
                          ({"since": in_an_hour, "until": hour_ago}, "since")]:
        error = assert_error(await client.get("/admin/usage/logs", params=params, headers=admin), 400)
        assert error["param"] == param, (params, error)
