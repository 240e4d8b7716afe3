"""Credentials checked recently are reused for a few seconds, but a change made on this replica (a revoked key,
a disabled account, a logout) is refused at the very next request."""

from __future__ import annotations

import httpx

from tests.api.conftest import MakeUser, assert_error
from tests.conftest import ADMIN_PASSWORD
from tests.support.access import USER_PASSWORD, bearer, login


async def test_a_revoked_key_is_refused_at_once_even_when_cached(client: httpx.AsyncClient,
                                                                 make_user: MakeUser) -> None:
    await make_user("kim")
    token = await login(client, "kim", USER_PASSWORD)
    created = (await client.post("/v1/keys", json={"name": "k"}, headers=bearer(token))).json()
    for _ in range(3):  # the second and third come from the cache
        assert (await client.get("/auth/me", headers=bearer(created["key"]))).status_code == 200
    assert (await client.delete(f"/v1/keys/{created['id']}", headers=bearer(token))).status_code == 200
    assert_error(await client.get("/auth/me", headers=bearer(created["key"])), 401, "invalid_api_key")


async def test_a_disabled_account_and_a_logout_are_refused_at_once(client: httpx.AsyncClient,
                                                                   make_user: MakeUser) -> None:
    user = await make_user("lou")
    token = await login(client, "lou", USER_PASSWORD)
    other = await login(client, "lou", USER_PASSWORD)
    assert (await client.get("/auth/me", headers=bearer(token))).status_code == 200
    assert (await client.get("/auth/me", headers=bearer(other))).status_code == 200
    assert (await client.post("/auth/logout", headers=bearer(other))).status_code == 204
    assert_error(await client.get("/auth/me", headers=bearer(other)), 401, "invalid_token")
    admin = bearer(await login(client, "admin", ADMIN_PASSWORD))
    disabled = await client.patch(f"/admin/users/{user.id}", json={"is_active": False}, headers=admin)
    assert disabled.status_code == 200, disabled.text
    assert (await client.get("/auth/me", headers=bearer(token))).status_code in (401, 403)


async def test_a_new_role_applies_at_once(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    user = await make_user("max")
    token = await login(client, "max", USER_PASSWORD)
    assert (await client.get("/admin/users", headers=bearer(token))).status_code == 403
    admin = bearer(await login(client, "admin", ADMIN_PASSWORD))
    assert (await client.patch(f"/admin/users/{user.id}", json={"role": "admin"}, headers=admin)).status_code == 200
    assert (await client.get("/admin/users", headers=bearer(token))).status_code == 200
