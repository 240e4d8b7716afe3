"""Credentials in tests: the Authorization header, logins (in process and over the network) and the password the
users tests make are given."""

from __future__ import annotations

import httpx

from tests.conftest import ADMIN_PASSWORD

USER_PASSWORD = "user-password-123"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(client: httpx.AsyncClient, username: str, password: str) -> str:
    """An access token for this user from the app ``client`` talks to."""
    response = await client.post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def admin_token_of(base_url: str, password: str = ADMIN_PASSWORD) -> str:
    """An access token of the bootstrap admin of the served API at ``base_url``."""
    return httpx.post(f"{base_url}/auth/login",
                      json={"username": "admin", "password": password}).json()["access_token"]
