"""Admin management of users: create, role, disable, password reset, and the last-admin guard."""

from __future__ import annotations

import asyncio

import httpx

from db.models import Role
from tests.api.conftest import MakeUser, assert_error
from tests.support.access import USER_PASSWORD, bearer, login


async def test_admin_creates_a_user_who_can_log_in(client: httpx.AsyncClient, admin_token: str) -> None:
    response = await client.post("/admin/users", headers=bearer(admin_token),
                                 json={"username": "ivan", "password": USER_PASSWORD, "email": "ivan@example.org"})
    assert response.status_code == 201
    assert response.json()["role"] == "user"
    token = await login(client, "ivan", USER_PASSWORD)
    assert (await client.get("/auth/me", headers=bearer(token))).json()["email"] == "ivan@example.org"
    duplicate = await client.post("/admin/users", headers=bearer(admin_token),
                                  json={"username": "IVAN", "password": USER_PASSWORD})
    assert_error(duplicate, 409, "username_taken")


async def test_promotion_gives_admin_access(client: httpx.AsyncClient, admin_token: str, user_token: str) -> None:
    assert_error(await client.get("/admin/users", headers=bearer(user_token)), 403, "admin_required")
    me = (await client.get("/auth/me", headers=bearer(user_token))).json()
    promoted = await client.patch(f"/admin/users/{me['id']}", json={"role": "admin"}, headers=bearer(admin_token))
    assert promoted.json()["role"] == "admin"
    assert (await client.get("/admin/users", headers=bearer(user_token))).status_code == 200


async def test_password_reset_by_admin(client: httpx.AsyncClient, admin_token: str, user_token: str) -> None:
    me = (await client.get("/auth/me", headers=bearer(user_token))).json()
    reset = await client.patch(f"/admin/users/{me['id']}", json={"password": "reset-by-admin-1"},
                               headers=bearer(admin_token))
    assert reset.status_code == 200
    assert_error(await client.get("/auth/me", headers=bearer(user_token)), 401, "invalid_token")
    await login(client, "alice", "reset-by-admin-1")


async def test_the_last_admin_cannot_be_demoted_or_disabled(client: httpx.AsyncClient, admin_token: str) -> None:
    me = (await client.get("/auth/me", headers=bearer(admin_token))).json()
    for change in ({"role": "user"}, {"is_active": False}):
        response = await client.patch(f"/admin/users/{me['id']}", json=change, headers=bearer(admin_token))
        assert_error(response, 409, "last_admin")
    assert (await client.get("/admin/users", headers=bearer(admin_token))).status_code == 200


async def test_unknown_user_and_bad_role(client: httpx.AsyncClient, admin_token: str) -> None:
    assert_error(await client.get("/admin/users/9999", headers=bearer(admin_token)), 404)
    response = await client.patch("/admin/users/1", json={"role": "root"}, headers=bearer(admin_token))
    assert assert_error(response, 400)["param"] == "role"


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(
    client: httpx.AsyncClient, admin_token: str, make_user: MakeUser
) -> None:
    second = await make_user("root2", role=Role.ADMIN)
    second_token = await login(client, "root2", USER_PASSWORD)
    first_id = (await client.get("/auth/me", headers=bearer(admin_token))).json()["id"]
    responses = await asyncio.gather(
        client.patch(f"/admin/users/{second.id}", json={"role": "user"}, headers=bearer(admin_token)),
        client.patch(f"/admin/users/{first_id}", json={"role": "user"}, headers=bearer(second_token)),
    )
    assert sorted(response.status_code for response in responses)[0] == 200
    assert any(response.status_code in (409, 503) for response in responses), [r.text for r in responses]
    # Ask as whoever kept the role: the one whose demotion was refused.
    survivor = second_token if responses[1].status_code == 200 else admin_token
    users = (await client.get("/admin/users", headers=bearer(survivor))).json()["data"]
    still_admins = [user for user in users if user["role"] == "admin" and user["is_active"]]
    assert len(still_admins) == 1
