"""Acceptance: read the database directly and find Argon2id hashes, and no plaintext password, token or key."""

from __future__ import annotations

import hashlib

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from db.base import Base
from tests.api.conftest import MakeUser, assert_error
from tests.conftest import ADMIN_PASSWORD
from tests.support.access import USER_PASSWORD, bearer, login


async def test_database_holds_only_hashes(app: FastAPI, client: httpx.AsyncClient, make_user: MakeUser) -> None:
    await make_user("petra")
    token = await login(client, "petra", USER_PASSWORD)
    key = (await client.post("/v1/keys", json={"name": "ci"}, headers=bearer(token))).json()["key"]
    changed_password = "petras-new-password"
    await client.post("/auth/password", headers=bearer(token),
                      json={"current_password": USER_PASSWORD, "new_password": changed_password})
    await client.post("/auth/login", json={"username": "petra", "password": "a-wrong-guess-1"})

    everything = ""
    async with app.state.services.db_engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            for row in await connection.execute(text(f"SELECT * FROM {table.name}")):
                everything += " | ".join(repr(value) for value in row) + "\n"
        hashes = [row[0] for row in await connection.execute(text("SELECT password_hash FROM users"))]
        token_hashes = [row[0] for row in await connection.execute(text("SELECT token_hash FROM auth_sessions"))]
        key_rows = list(await connection.execute(text("SELECT key_hash, prefix FROM api_keys")))

    for secret in (USER_PASSWORD, changed_password, "a-wrong-guess-1", ADMIN_PASSWORD, token, key):
        assert secret not in everything
    assert len(hashes) == 2 and all(value.startswith("$argon2id$") for value in hashes)
    assert hashlib.sha256(token.encode()).hexdigest() in token_hashes
    assert key_rows == [(hashlib.sha256(key.encode()).hexdigest(), key[:15])]


async def test_provider_api_keys_are_stored_as_ciphertext(app: FastAPI, client: httpx.AsyncClient) -> None:
    admin = bearer(await login(client, "admin", ADMIN_PASSWORD))
    upstream_key = "sk-upstream-0123456789-do-not-store-me"
    created = await client.post("/admin/providers", headers=admin, json={
        "name": "vault", "base_url": "http://127.0.0.1:9/v1", "api_key": upstream_key})
    assert created.status_code == 201, created.text
    assert created.json()["has_api_key"] is True and upstream_key not in created.text
    async with app.state.services.db_engine.connect() as connection:
        [stored] = [row[0] for row in await connection.execute(text("SELECT api_key_encrypted FROM providers"))]
    assert upstream_key.encode() not in stored and len(stored) >= len(upstream_key) + 12 + 16  # nonce + tag
    # And it opens only as that provider's key.
    gateway = app.state.services.gateway
    assert gateway.providers[created.json()["id"]].upstream.config.api_key == upstream_key


async def test_a_provider_moved_to_another_host_needs_its_key_again(app: FastAPI, client: httpx.AsyncClient) -> None:
    admin = bearer(await login(client, "admin", ADMIN_PASSWORD))
    upstream_key = "sk-upstream-0123456789-for-the-first-host"
    created = (await client.post("/admin/providers", headers=admin, json={
        "name": "moving", "base_url": "http://127.0.0.1:9/v1", "api_key": upstream_key})).json()
    url = f"/admin/providers/{created['id']}"

    moved = await client.patch(url, headers=admin, json={"base_url": "http://attacker.example/v1"})
    assert_error(moved, 400, "api_key_required")
    provider = app.state.services.gateway.providers[created["id"]]
    assert provider.upstream.config.base_url == "http://127.0.0.1:9/v1"  # nothing changed
    assert provider.upstream.config.api_key == upstream_key

    renamed = await client.patch(url, headers=admin, json={"name": "moved", "base_url": "http://127.0.0.1:9/v1/"})
    assert renamed.status_code == 200 and renamed.json()["has_api_key"] is True  # same host: the key stays
    dropped = await client.patch(url, headers=admin, json={"base_url": "http://127.0.0.2:9/v1", "api_key": None})
    assert dropped.status_code == 200 and dropped.json()["has_api_key"] is False
    given = await client.patch(url, headers=admin, json={"base_url": "http://127.0.0.3:9/v1", "api_key": "sk-new"})
    assert given.status_code == 200 and given.json()["has_api_key"] is True
    assert app.state.services.gateway.providers[created["id"]].upstream.config.api_key == "sk-new"
