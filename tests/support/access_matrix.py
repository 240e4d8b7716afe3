"""What the access-matrix tests (HTTP routes, WebSocket messages) share: the kinds of access a route or message
declares, the in-process app they run against (an echo backend beside the local model, open registration, usage
written every 50 ms), and the spoilt credentials (an expired login, a revoked key) every matrix tries."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from api.services.accounts.credentials import credential_hash
from api.services.gateway.backends import Backend
from api.settings import Settings
from db.models import AuthSession
from db.types import utcnow
from engine.interface import EngineStats, Health
from engine.requests import EngineEvent, FinishEvent, GenerationRequest, StartEvent, TokenEvent, Usage
from tests.support.access import USER_PASSWORD, bearer, login

MODEL = "echo"


class Access(enum.Enum):
    PUBLIC = "no credentials needed"
    USER = "any signed-in user, for their own account"
    OWN_LIST = "any signed-in user; lists only their own rows"
    OWNER = "the owner of the resource named in the path or body only"
    ADMIN = "the admin role"


class EchoEngine:
    """A deterministic engine for the API layer: three tokens, at once."""

    async def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        yield StartEvent(request.request_id, 4, 3)
        for index in range(3):
            yield TokenEvent(request.request_id, 0, "echo ", (index,))
        yield FinishEvent(request.request_id, 0, "length", Usage(4, 3))

    def abort(self, request_id: str) -> None:
        pass

    async def check_health(self) -> Health:
        return Health(True, "echo")

    def stats(self) -> EngineStats:
        return EngineStats(0, 0, 0, 0.0, 0)


def echo_settings(settings: Settings) -> Settings:
    """Open registration, and usage written every 50 ms (so a test reads its rows soon)."""
    return settings.model_copy(update={"open_registration": True, "usage_flush_interval": timedelta(milliseconds=50)})


def echo_backends() -> list[Backend]:
    """An echo backend beside the local model, so chats, streams and usage are real rows."""
    return [Backend(model=MODEL, kind="test", client=EchoEngine())]


async def expired_token(app: FastAPI, client: httpx.AsyncClient, username: str) -> str:
    """A login of ``username`` that was valid (and used, so a replica may have it cached) and then expired."""
    token = await login(client, username, USER_PASSWORD)
    assert (await client.get("/auth/me", headers=bearer(token))).status_code == 200
    async with app.state.services.sessionmaker() as session:
        row = (await session.scalars(select(AuthSession).where(
            AuthSession.token_hash == credential_hash(token)))).one()
        row.expires_at = utcnow() - timedelta(seconds=1)
        await session.commit()
    return token


async def revoked_key(client: httpx.AsyncClient, token: str) -> str:
    created = (await client.post("/v1/keys", json={"name": "to revoke"}, headers=bearer(token))).json()
    assert (await client.get("/auth/me", headers=bearer(created["key"]))).status_code == 200
    assert (await client.delete(f"/v1/keys/{created['id']}", headers=bearer(token))).status_code == 200
    return created["key"]
