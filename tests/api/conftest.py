"""The API in process (its real lifespan, a real database) driven by httpx, plus helpers to make users."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.services.users import create_user
from api.settings import Settings
from db.models import Role, User
from tests.conftest import ADMIN_PASSWORD, make_settings

USER_PASSWORD = "user-password-123"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path / "var", database_url)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://llmws.test") as http:
        yield http


MakeUser = Callable[..., Awaitable[User]]


@pytest.fixture
def make_user(app: FastAPI) -> MakeUser:
    async def make(username: str, *, role: Role = Role.USER, password: str = USER_PASSWORD) -> User:
        async with app.state.sessionmaker() as session:
            user = await create_user(session, username, password, role=role)
            await session.commit()
            return user

    return make


async def login(client: httpx.AsyncClient, username: str, password: str) -> str:
    response = await client.post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def admin_token(client: httpx.AsyncClient) -> str:
    return await login(client, "admin", ADMIN_PASSWORD)


@pytest.fixture
async def user_token(client: httpx.AsyncClient, make_user: MakeUser) -> str:
    await make_user("alice")
    return await login(client, "alice", USER_PASSWORD)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The response is the API's one error shape with this status (and code, when given)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]
