"""Acceptance: bad input gets the right 4xx in the error shape, and the database does not change."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text, update

from api.services.accounts.credentials import credential_hash
from db.base import Base
from db.models import AuthSession
from db.types import utcnow
from tests.api.conftest import MakeUser, assert_error
from tests.conftest import ADMIN_PASSWORD
from tests.support.access import USER_PASSWORD, bearer, login


async def snapshot(app: FastAPI) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read straight from the database."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    async with app.state.services.db_engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows = await connection.execute(text(f"SELECT * FROM {table.name} ORDER BY 1"))
            tables[table.name] = [tuple(row) for row in rows]
    return tables


@pytest.fixture
async def world(app: FastAPI, client: httpx.AsyncClient, make_user: MakeUser) -> dict[str, str]:
    """Users with a live token, an expired token, a revoked key, and an admin; every credential's last use is
    backdated, so any request that authenticates stages a write that must not survive its failure."""
    await make_user("olga")
    live = await login(client, "olga", USER_PASSWORD)
    expired = await login(client, "olga", USER_PASSWORD)
    admin = await login(client, "admin", ADMIN_PASSWORD)
    key = (await client.post("/v1/keys", json={"name": "k"}, headers=bearer(live))).json()
    await client.delete(f"/v1/keys/{key['id']}", headers=bearer(live))
    pat = await client.post("/admin/users", headers=bearer(admin),
                            json={"username": "pat", "password": USER_PASSWORD, "email": "pat@example.org"})
    async with app.state.services.sessionmaker() as session:
        await session.execute(update(AuthSession).where(AuthSession.token_hash == credential_hash(expired))
                              .values(expires_at=utcnow() - timedelta(minutes=1)))
        await session.execute(update(AuthSession).values(last_used_at=utcnow() - timedelta(hours=1)))
        await session.commit()
    olga_id = (await client.get("/admin/users", headers=bearer(admin))).json()["data"][1]["id"]
    return {"live": live, "expired": expired, "revoked_key": key["key"], "admin": admin,
            "olga_id": str(olga_id), "pat_email": pat.json()["email"]}


async def test_bad_requests_change_nothing(app: FastAPI, client: httpx.AsyncClient, world: dict[str, str]) -> None:
    before = await snapshot(app)
    live = bearer(world["live"])
    json_headers = {"content-type": "application/json"}

    assert_error(await client.post("/auth/login", content=b"{not json", headers=json_headers), 400, "invalid_json")
    assert_error(await client.post("/auth/login", content=b"[1, 2]", headers=json_headers), 400)
    wrong_type = await client.post("/auth/login", json={"username": "olga", "password": 12345})
    assert assert_error(wrong_type, 400, "invalid_value")["param"] == "password"
    missing = await client.post("/auth/login", json={"username": "olga"})
    assert assert_error(missing, 400, "missing_field")["param"] == "password"
    unknown_field = await client.post("/v1/keys", json={"name": "x", "admin": True}, headers=live)
    assert assert_error(unknown_field, 400, "unknown_field")["param"] == "admin"
    too_long = await client.post("/v1/keys", json={"name": "x" * 101}, headers=live)
    assert assert_error(too_long, 400)["param"] == "name"
    bad_query = await client.get("/v1/keys", params={"limit": "many"}, headers=live)
    assert assert_error(bad_query, 400)["param"] == "limit"
    bad_path = await client.delete("/v1/keys/not-a-number", headers=live)
    assert assert_error(bad_path, 400)["param"] == "key_id"

    two_megabytes = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    assert_error(await client.post("/v1/keys", content=two_megabytes, headers={**live, **json_headers}), 413,
                 "body_too_large")

    async def chunks() -> Any:  # no Content-Length: the limit must hold while streaming too
        for _ in range(40):
            yield b"x" * 65536

    assert_error(await client.post("/v1/keys", content=chunks(), headers={**live, **json_headers}), 413)
    assert_error(await client.get("/v1/nothing-here", headers=live), 404, "unknown_route")
    assert_error(await client.put("/healthz"), 405, "method_not_allowed")
    assert_error(await client.get("/auth/me", headers=bearer(world["expired"])), 401, "token_expired")
    assert_error(await client.get("/auth/me", headers=bearer(world["revoked_key"])), 401, "invalid_api_key")
    assert_error(await client.post("/v1/keys", json={"name": "x"}, headers=bearer(world["revoked_key"])), 401)
    # Fails only after the role change was flushed: the whole unit of work must roll back.
    clash = await client.patch(f"/admin/users/{world['olga_id']}", headers=bearer(world["admin"]),
                               json={"role": "admin", "email": world["pat_email"]})
    assert_error(clash, 409, "email_taken")
    weak = await client.patch(f"/admin/users/{world['olga_id']}", headers=bearer(world["admin"]),
                              json={"is_active": False, "password": "short"})
    assert_error(weak, 400, "weak_password")
    assert await snapshot(app) == before

    # A wrong password changes one thing on purpose: the failed attempt is audited.
    assert_error(await client.post("/auth/login", json={"username": "olga", "password": "wrong-password"}), 401)
    after = await snapshot(app)
    assert {name: rows for name, rows in after.items() if name != "audit_logs"} == {
        name: rows for name, rows in before.items() if name != "audit_logs"}
    added = after["audit_logs"][len(before["audit_logs"]):]
    assert len(added) == 1 and "auth.login_failed" in added[0]
