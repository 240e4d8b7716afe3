"""API keys: shown once, stored as a hash, usable as a bearer, revocable by the owner or an admin only."""

from __future__ import annotations

from datetime import timedelta

import httpx

from db.types import utcnow
from tests.api.conftest import MakeUser, assert_error
from tests.support.access import USER_PASSWORD, bearer, login


async def create_key(client: httpx.AsyncClient, token: str, name: str = "laptop", **extra: object) -> dict:
    response = await client.post("/v1/keys", json={"name": name, **extra}, headers=bearer(token))
    assert response.status_code == 201, response.text
    return response.json()


async def test_key_is_shown_once_and_then_only_by_prefix(client: httpx.AsyncClient, user_token: str) -> None:
    created = await create_key(client, user_token)
    assert created["key"].startswith("sk-llmws-") and len(created["key"]) > 40
    assert created["key"].startswith(created["prefix"]) and created["prefix"] != created["key"]
    listed = (await client.get("/v1/keys", headers=bearer(user_token))).json()["data"]
    assert [key["id"] for key in listed] == [created["id"]]
    assert "key" not in listed[0]
    assert created["key"] not in (await client.get("/v1/keys", headers=bearer(user_token))).text


async def test_key_authenticates_and_records_last_use(client: httpx.AsyncClient, user_token: str) -> None:
    created = await create_key(client, user_token)
    assert created["last_used_at"] is None
    me = await client.get("/auth/me", headers=bearer(created["key"]))
    assert me.status_code == 200 and me.json() | {"credential": "api_key"} == me.json()
    listed = (await client.get("/v1/keys", headers=bearer(user_token))).json()["data"]
    assert listed[0]["last_used_at"] is not None


async def test_revoked_key_stops_working(client: httpx.AsyncClient, user_token: str) -> None:
    created = await create_key(client, user_token)
    revoked = await client.delete(f"/v1/keys/{created['id']}", headers=bearer(user_token))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert_error(await client.get("/auth/me", headers=bearer(created["key"])), 401, "invalid_api_key")
    assert (await client.get("/v1/keys", headers=bearer(user_token))).json()["data"] == []
    with_revoked = await client.get("/v1/keys", params={"include_revoked": True}, headers=bearer(user_token))
    assert len(with_revoked.json()["data"]) == 1


async def test_expired_key_is_refused(client: httpx.AsyncClient, user_token: str) -> None:
    assert_error(await client.post("/v1/keys", json={"name": "old", "expires_at": "2000-01-01T00:00:00Z"},
                                   headers=bearer(user_token)), 400, "invalid_value")
    soon = (utcnow() + timedelta(days=1)).isoformat()
    created = await create_key(client, user_token, expires_at=soon)
    assert created["expires_at"] is not None


async def test_a_user_cannot_see_or_revoke_another_users_key(
    client: httpx.AsyncClient, user_token: str, make_user: MakeUser
) -> None:
    alices = await create_key(client, user_token)
    await make_user("mallory")
    mallory = await login(client, "mallory", USER_PASSWORD)
    assert (await client.get("/v1/keys", headers=bearer(mallory))).json()["data"] == []
    assert_error(await client.delete(f"/v1/keys/{alices['id']}", headers=bearer(mallory)), 404, "not_found")
    assert (await client.get("/auth/me", headers=bearer(alices["key"]))).status_code == 200


async def test_admin_lists_and_revokes_anyones_keys(
    client: httpx.AsyncClient, user_token: str, admin_token: str
) -> None:
    alices = await create_key(client, user_token)
    listed = (await client.get("/admin/keys", headers=bearer(admin_token))).json()["data"]
    assert [key["id"] for key in listed] == [alices["id"]]
    assert (await client.delete(f"/admin/keys/{alices['id']}", headers=bearer(admin_token))).status_code == 200
    assert_error(await client.get("/auth/me", headers=bearer(alices["key"])), 401, "invalid_api_key")
    audit = (await client.get("/admin/audit", headers=bearer(admin_token))).json()["data"]
    assert {"api_key.created", "api_key.revoked"} <= {entry["action"] for entry in audit}


async def test_logout_with_an_api_key_is_refused(client: httpx.AsyncClient, user_token: str) -> None:
    created = await create_key(client, user_token)
    assert_error(await client.post("/auth/logout", headers=bearer(created["key"])), 400, "not_a_session")
    assert (await client.get("/auth/me", headers=bearer(created["key"]))).status_code == 200


async def test_an_api_key_cannot_mint_a_key(client: httpx.AsyncClient, user_token: str, admin_token: str) -> None:
    """Only a login session creates keys: a limited key that expires tomorrow must not make an unlimited one that
    never expires (and would outlive its revocation)."""
    tomorrow = (utcnow() + timedelta(days=1)).isoformat()
    parent = await create_key(client, user_token, "limited", expires_at=tomorrow)
    limited = await client.put(f"/admin/keys/{parent['id']}/limits", json={"requests_per_minute": 1},
                               headers=bearer(admin_token))
    assert limited.status_code == 200, limited.text
    refused = await client.post("/v1/keys", json={"name": "child"}, headers=bearer(parent["key"]))
    assert "login session" in assert_error(refused, 403, "login_session_required")["message"]
    listed = (await client.get("/v1/keys", headers=bearer(user_token))).json()["data"]
    assert [key["id"] for key in listed] == [parent["id"]]


async def test_an_api_key_cannot_change_a_password(client: httpx.AsyncClient, user_token: str) -> None:
    key = await create_key(client, user_token)
    change = {"current_password": USER_PASSWORD, "new_password": "a-new-password-456"}
    assert_error(await client.post("/auth/password", json=change, headers=bearer(key["key"])), 403,
                 "login_session_required")
    assert await login(client, "alice", USER_PASSWORD)  # unchanged
    assert (await client.post("/auth/password", json=change, headers=bearer(user_token))).status_code == 204


async def test_an_admins_api_key_cannot_make_users_or_change_rights_or_limits(
    client: httpx.AsyncClient, admin_token: str, make_user: MakeUser
) -> None:
    key = await create_key(client, admin_token, "admin-ci")
    bob = await make_user("bob")
    as_key = bearer(key["key"])
    attempts = [
        client.post("/admin/users", json={"username": "eve", "password": "eve-password-123", "role": "admin"},
                    headers=as_key),
        client.patch(f"/admin/users/{bob.id}", json={"role": "admin", "password": "taken-over-123"}, headers=as_key),
        client.put(f"/admin/users/{bob.id}/limits", json={"requests_per_minute": None}, headers=as_key),
        client.put(f"/admin/keys/{key['id']}/limits", json={"requests_per_minute": None}, headers=as_key),
    ]
    for attempt in attempts:
        assert_error(await attempt, 403, "login_session_required")
    users = (await client.get("/admin/users", headers=as_key)).json()["data"]  # reading is still allowed
    assert sorted(user["username"] for user in users) == ["admin", "bob"]
    assert next(user for user in users if user["username"] == "bob")["role"] == "user"
    assert await login(client, "bob", USER_PASSWORD)
    audit = (await client.get("/admin/audit", headers=as_key)).json()["data"]
    assert not {"user.updated", "user.limits_set", "api_key.limits_set"} & {
        entry["action"] for entry in audit}
