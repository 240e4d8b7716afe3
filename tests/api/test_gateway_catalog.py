"""The gateway's catalogue in process: an admin's change is served as soon as the admin call returns, even while a
slower reload (the health round's, started before the change) is still reading; and a health round over many
providers is one write."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from sqlalchemy import event, select

from db.models import Provider
from tests.support.access import bearer
from tests.support.net import free_port


async def test_a_slow_reload_started_before_an_admin_change_does_not_undo_it(
        app: FastAPI, client: httpx.AsyncClient, admin_token: str) -> None:
    gateway = app.state.services.gateway
    real_sessions = gateway.sessions
    read, release = asyncio.Event(), asyncio.Event()

    @contextlib.asynccontextmanager
    async def reads_then_waits() -> AsyncIterator[object]:
        async with real_sessions() as session:
            yield session
        read.set()  # the slow reload has read the catalogue as it was before the change
        await release.wait()

    gateway.sessions = reads_then_waits
    slow = asyncio.create_task(gateway.reload())
    await read.wait()
    gateway.sessions = real_sessions

    created = await client.post("/admin/models", headers=bearer(admin_token),
                                json={"name": "fresh-alias", "deployments": [{"provider_id": None}]})
    assert created.status_code == 201, created.text
    assert gateway.alias("fresh-alias", None) is not None

    release.set()
    await slow
    assert gateway.alias("fresh-alias", None) is not None, "the stale reload put back the catalogue without the alias"
    listed = await client.get("/v1/models", headers=bearer(admin_token))
    assert "fresh-alias" in [model["id"] for model in listed.json()["data"]]


async def test_a_health_round_saves_every_providers_health_in_one_transaction(
        app: FastAPI, client: httpx.AsyncClient, admin_token: str) -> None:
    """A round (every LLMWS_PROVIDER_HEALTH_INTERVAL) over many providers is one write, not one per provider queued
    behind the usage writer and every request's (SQLite has one writer): 25 providers nobody listens for."""
    port = free_port()
    for index in range(25):
        created = await client.post("/admin/providers", headers=bearer(admin_token), json={
            "name": f"down-{index}", "base_url": f"http://127.0.0.1:{port}/v1", "timeout_s": 2})
        assert created.status_code == 201, created.text
    gateway = app.state.services.gateway
    commits: list[object] = []

    def count(connection: object) -> None:
        commits.append(connection)

    sync_engine = app.state.services.db_engine.sync_engine
    event.listen(sync_engine, "commit", count)
    try:
        await gateway.check_all()
    finally:
        event.remove(sync_engine, "commit", count)
    assert len(commits) == 1
    async with app.state.services.sessionmaker() as session:
        saved = (await session.scalars(select(Provider.health_status))).all()
    assert saved == ["unhealthy"] * 25
