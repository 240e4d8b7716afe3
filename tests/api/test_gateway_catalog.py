"""The gateway's catalogue in process: an admin's change is served as soon as the admin call returns, even while a
slower reload (the health round's, started before the change) is still reading."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from tests.support.access import bearer


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
