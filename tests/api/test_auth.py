"""Logging in and out, tokens, registration, password changes and login throttling, over HTTP."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from db.models import AuditLog, AuthSession, Role, User
from db.types import utcnow
from tests.api.conftest import MakeUser, assert_error
from tests.conftest import ADMIN_PASSWORD
from tests.support.access import USER_PASSWORD, bearer, login
from tests.support.in_process import client_from


async def test_first_admin_is_created_from_settings_and_can_log_in(client: httpx.AsyncClient) -> None:
    response = await client.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["user"]["role"] == "admin"
    me = await client.get("/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json()["username"] == "admin"
    assert me.json()["credential"] == "session"


async def test_usernames_are_case_insensitive(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    await make_user("Carol")
    token = await login(client, "CAROL", USER_PASSWORD)
    assert (await client.get("/auth/me", headers=bearer(token))).json()["username"] == "carol"


async def test_wrong_password_and_unknown_user_get_the_same_answer(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    await make_user("bob")
    wrong = await client.post("/auth/login", json={"username": "bob", "password": "not-his-password"})
    unknown = await client.post("/auth/login", json={"username": "nobody", "password": "whatever-it-is"})
    assert assert_error(wrong, 401, "invalid_credentials") == assert_error(unknown, 401, "invalid_credentials")
    assert wrong.headers["www-authenticate"] == "Bearer"


async def test_logout_revokes_the_token(client: httpx.AsyncClient, user_token: str) -> None:
    assert (await client.post("/auth/logout", headers=bearer(user_token))).status_code == 204
    assert_error(await client.get("/auth/me", headers=bearer(user_token)), 401, "invalid_token")


async def test_expired_token_is_refused(app: FastAPI, client: httpx.AsyncClient, user_token: str) -> None:
    async with app.state.services.sessionmaker() as session:
        await session.execute(update(AuthSession).values(expires_at=utcnow() - timedelta(seconds=1)))
        await session.commit()
    assert_error(await client.get("/auth/me", headers=bearer(user_token)), 401, "token_expired")


async def test_token_lifetime_comes_from_settings(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    await make_user("dave")
    response = await client.post("/auth/login", json={"username": "dave", "password": USER_PASSWORD})
    expires_at = response.json()["expires_at"]
    from datetime import datetime

    remaining = datetime.fromisoformat(expires_at) - utcnow()
    assert timedelta(days=6, hours=23) < remaining <= timedelta(days=7)


async def test_malformed_authorization_headers(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/auth/me"), 401, "missing_credentials")
    assert_error(await client.get("/auth/me", headers={"Authorization": "Basic abc"}), 401,
                 "invalid_authorization_header")
    assert_error(await client.get("/auth/me", headers=bearer("llmws-sess-forged")), 401, "invalid_token")
    assert_error(await client.get("/auth/me", headers=bearer("sk-llmws-forged")), 401, "invalid_api_key")


async def test_disabled_user_cannot_log_in_and_loses_open_sessions(
    client: httpx.AsyncClient, admin_token: str, user_token: str
) -> None:
    users = (await client.get("/admin/users", headers=bearer(admin_token))).json()["data"]
    alice = next(user for user in users if user["username"] == "alice")
    response = await client.patch(f"/admin/users/{alice['id']}", json={"is_active": False},
                                  headers=bearer(admin_token))
    assert response.status_code == 200 and response.json()["is_active"] is False
    assert_error(await client.get("/auth/me", headers=bearer(user_token)), 401, "invalid_token")
    refused = await client.post("/auth/login", json={"username": "alice", "password": USER_PASSWORD})
    assert_error(refused, 403, "account_disabled")


async def test_registration_is_closed_by_default(client: httpx.AsyncClient) -> None:
    response = await client.post("/auth/register", json={"username": "eve", "password": "long-enough-pw"})
    assert_error(response, 403, "registration_closed")
    assert_error(await client.post("/auth/login", json={"username": "eve", "password": "long-enough-pw"}), 401)


async def test_open_registration_creates_a_plain_user(app: FastAPI, client: httpx.AsyncClient) -> None:
    app.state.settings = app.state.settings.model_copy(update={"open_registration": True})
    response = await client.post("/auth/register", json={"username": "Eve", "password": "long-enough-pw"})
    assert response.status_code == 201, response.text
    assert response.json()["username"] == "eve" and response.json()["role"] == "user"
    assert_error(await client.post("/auth/register", json={"username": "eve", "password": "another-pw-1"}),
                 409, "username_taken")
    assert_error(await client.post("/auth/register", json={"username": "frank", "password": "short"}),
                 400, "weak_password")
    assert_error(await client.post("/auth/register", json={"username": "bad name!", "password": "long-enough"}),
                 400, "invalid_username")
    token = await login(client, "eve", "long-enough-pw")
    assert (await client.get("/auth/me", headers=bearer(token))).json()["role"] == "user"


async def test_password_change_keeps_this_session_and_ends_the_others(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    await make_user("gina")
    laptop = await login(client, "gina", USER_PASSWORD)
    phone = await login(client, "gina", USER_PASSWORD)
    wrong = await client.post("/auth/password", headers=bearer(laptop),
                              json={"current_password": "nope-nope", "new_password": "brand-new-password"})
    assert assert_error(wrong, 400, "wrong_password")["param"] == "current_password"
    changed = await client.post("/auth/password", headers=bearer(laptop),
                                json={"current_password": USER_PASSWORD, "new_password": "brand-new-password"})
    assert changed.status_code == 204
    assert (await client.get("/auth/me", headers=bearer(laptop))).status_code == 200
    assert_error(await client.get("/auth/me", headers=bearer(phone)), 401, "invalid_token")
    assert_error(await client.post("/auth/login", json={"username": "gina", "password": USER_PASSWORD}), 401)
    await login(client, "gina", "brand-new-password")


async def test_repeated_failures_are_slowed_down_and_audited(
    app: FastAPI, client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    await make_user("henry")
    limit = app.state.settings.login_max_failures
    for _ in range(limit):
        assert_error(await client.post("/auth/login", json={"username": "henry", "password": "guess-guess"}), 401)
    # Even the right password waits now: the guesser cannot tell which attempt would have worked.
    throttled = await client.post("/auth/login", json={"username": "henry", "password": USER_PASSWORD})
    assert_error(throttled, 429, "login_throttled")
    assert 1 <= int(throttled.headers["retry-after"]) <= 5
    # Another account from the same address is not locked by henry's failures.
    assert (await client.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})).status_code == 200

    async with app.state.services.sessionmaker() as session:
        failures = (await session.execute(select(AuditLog).where(AuditLog.action == "auth.login_failed"))).scalars()
        rows = list(failures)
    assert len(rows) == limit
    assert all(row.subject == "henry" and row.ip == "203.0.113.7" for row in rows)


async def test_logins_are_audited(app: FastAPI, client: httpx.AsyncClient, admin_token: str) -> None:
    response = await client.get("/admin/audit", params={"action": "auth.login"}, headers=bearer(admin_token))
    entries = response.json()["data"]
    assert len(entries) == 1
    assert entries[0]["subject"] == "admin" and entries[0]["ip"] == "203.0.113.7"


async def test_plain_user_role_is_user(client: httpx.AsyncClient, user_token: str) -> None:
    assert (await client.get("/auth/me", headers=bearer(user_token))).json()["role"] == Role.USER.value


async def test_one_address_guessing_many_usernames_is_slowed_down(app: FastAPI, client: httpx.AsyncClient) -> None:
    allowance = app.state.settings.login_max_failures * 4
    for attempt in range(allowance):
        response = await client.post("/auth/login", json={"username": f"guess{attempt}", "password": "nope-nope"})
        assert_error(response, 401)
    throttled = await client.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert_error(throttled, 429, "login_throttled")
    assert int(throttled.headers["retry-after"]) >= 1


async def test_a_burst_of_concurrent_guesses_is_counted(app: FastAPI, client: httpx.AsyncClient,
                                                        make_user: MakeUser) -> None:
    await make_user("ivy")
    limit = app.state.settings.login_max_failures
    responses = await asyncio.gather(*(
        client.post("/auth/login", json={"username": "ivy", "password": f"guess-{n:04d}"}) for n in range(3 * limit)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses.count(401) <= limit
    assert statuses.count(429) >= 2 * limit
    assert set(statuses) == {401, 429}


async def test_wrong_current_passwords_count_as_failed_logins(
    app: FastAPI, client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    await make_user("jack")
    token = await login(client, "jack", USER_PASSWORD)
    for _ in range(app.state.settings.login_max_failures):
        response = await client.post("/auth/password", headers=bearer(token),
                                     json={"current_password": "guess-guess", "new_password": "whatever-new-1"})
        assert_error(response, 400, "wrong_password")
    response = await client.post("/auth/password", headers=bearer(token),
                                 json={"current_password": USER_PASSWORD, "new_password": "whatever-new-1"})
    assert_error(response, 429, "login_throttled")
    assert_error(await client.post("/auth/login", json={"username": "jack", "password": USER_PASSWORD}), 429)


async def test_login_attempts_leave_one_audit_row_each(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str, user_token: str
) -> None:
    await client.post("/auth/login", json={"username": "alice", "password": "wrong-password"})
    users = (await client.get("/admin/users", headers=bearer(admin_token))).json()["data"]
    alice = next(user for user in users if user["username"] == "alice")
    await client.patch(f"/admin/users/{alice['id']}", json={"is_active": False}, headers=bearer(admin_token))
    await client.post("/auth/login", json={"username": "alice", "password": USER_PASSWORD})
    entries = (await client.get("/admin/audit", headers=bearer(admin_token))).json()["data"]
    alices = [entry["action"] for entry in reversed(entries)
              if entry["subject"] == "alice" and entry["action"].startswith("auth.")]
    assert alices == ["auth.login", "auth.login_failed", "auth.login_refused"]


async def test_a_strangers_wrong_guesses_do_not_lock_the_owner_out(
    app: FastAPI, client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    await make_user("kate")
    for _ in range(app.state.settings.login_max_failures + 1):
        await client.post("/auth/login", json={"username": "kate", "password": "guess-guess"})
    assert_error(await client.post("/auth/login", json={"username": "kate", "password": USER_PASSWORD}), 429,
                 "login_throttled")
    async with client_from(app, "198.51.100.20") as owners_laptop:
        assert (await owners_laptop.post("/auth/login",
                                         json={"username": "kate", "password": USER_PASSWORD})).status_code == 200


async def test_one_address_gets_a_bounded_number_of_password_checks(
    app: FastAPI, client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    # Right passwords too: each check is an Argon2 hash, so an address logging in in a loop would burn the CPUs.
    app.state.settings = app.state.settings.model_copy(update={"password_checks_per_address": 3})
    await make_user("liam")
    for _ in range(3):
        await login(client, "liam", USER_PASSWORD)
    throttled = await client.post("/auth/login", json={"username": "liam", "password": USER_PASSWORD})
    assert_error(throttled, 429, "login_throttled")
    window_s = app.state.settings.login_failure_window.total_seconds()
    assert 1 <= int(throttled.headers["retry-after"]) <= window_s
    async with client_from(app, "198.51.100.21") as elsewhere:
        await login(elsewhere, "liam", USER_PASSWORD)


async def test_registrations_count_against_the_address_allowance(app: FastAPI, client: httpx.AsyncClient) -> None:
    app.state.settings = app.state.settings.model_copy(
        update={"open_registration": True, "password_checks_per_address": 2})
    for name in ("mia", "noah"):
        response = await client.post("/auth/register", json={"username": name, "password": "long-enough-pw"})
        assert response.status_code == 201, response.text
    refused = await client.post("/auth/register", json={"username": "olga", "password": "long-enough-pw"})
    assert_error(refused, 429, "registration_throttled")
    assert int(refused.headers["retry-after"]) >= 1
    async with app.state.services.sessionmaker() as session:
        assert (await session.execute(select(User).where(User.username == "olga"))).scalar() is None
    async with client_from(app, "198.51.100.22") as elsewhere:
        response = await elsewhere.post("/auth/register", json={"username": "olga", "password": "long-enough-pw"})
        assert response.status_code == 201, response.text


async def test_the_throttle_queries_search_their_indexes(app: FastAPI, client: httpx.AsyncClient) -> None:
    """Each count the throttle makes is an index search on the address and a time range, not a scan of every
    failure in the window: the audit log grows without bound."""
    engine: AsyncEngine = app.state.services.sessionmaker.kw["bind"]
    counts: list[tuple[str, object]] = []

    def capture(_conn: object, _cursor: object, statement: str, parameters: object, *_: object) -> None:
        if "FROM audit_logs" in statement and "count(" in statement:
            counts.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        await client.post("/auth/login", json={"username": "admin", "password": "wrong-password"})
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
    assert len(counts) == 3  # (account, address) failures, address failures, address password work

    plans = []
    async with engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:  # an almost empty table is cheaper to scan: ask which index the planner would use
            await connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        for statement, parameters in counts:
            explain = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
            rows = (await connection.exec_driver_sql(explain + statement, parameters)).all()
            plans.append(" ".join(str(row[-1]) for row in rows))
    for plan in plans:
        assert "ix_audit_logs_ip_action_created" in plan, plan
    if not postgres:
        assert all("SCAN audit_logs" not in plan for plan in plans), plans
