"""The API in process (its real lifespan, a real database) driven by httpx, plus helpers to make users."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.services.users import create_user
from api.settings import Settings
from db.models import Role, User
from tests.api.live import LiveApi, start_server, wait_ready
from tests.conftest import ADMIN_PASSWORD, BACKENDS, make_settings, truncate_all

USER_PASSWORD = "user-password-123"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path / "var", database_url)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def client_from(app: FastAPI, address: str) -> httpx.AsyncClient:
    """An httpx client of the in-process app whose requests come from this client address."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://llmws.test")


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_from(app, "203.0.113.7") as http:
        yield http


MakeUser = Callable[..., Awaitable[User]]


@pytest.fixture
def make_user(app: FastAPI) -> MakeUser:
    async def make(username: str, *, role: Role = Role.USER, password: str = USER_PASSWORD) -> User:
        async with app.state.services.sessionmaker() as session:
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


@pytest.fixture(scope="module", params=BACKENDS)
def live_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path,
             chat_model_dir: Path) -> Iterator[LiveApi]:
    """`llmws serve` serving the tiny chat model, on a migrated database of each backend, shared by a module's
    tests (each test makes its own account). Native streams nobody follows are cancelled after 2 s."""
    folder = tmp_path_factory.mktemp("live")
    if request.param == "sqlite":
        database = folder / "llmws.db"
        shutil.copyfile(sqlite_template, database)
        url = f"sqlite:///{database}"
    else:
        url = request.getfixturevalue("postgres_url")
    env = {name: value for name, value in os.environ.items() if not name.startswith("LLMWS_")}
    env |= {"LLMWS_DATA_DIR": str(folder / "var"), "LLMWS_DATABASE_URL": url, "PYTHONUNBUFFERED": "1",
            "LLMWS_MODEL_DIRS": str(chat_model_dir.parent), "LLMWS_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "LLMWS_STREAM_RESUME_WINDOW": str(LIVE_RESUME_WINDOW_S), "LLMWS_USAGE_FLUSH_INTERVAL": "1",
            "LLMWS_PROVIDER_HEALTH_INTERVAL": "1", "LLMWS_AUTH_CACHE_TTL": "1",
            # Replicas share the secret key (what the WebSocket buffers are sealed with).
            "LLMWS_SECRET_KEY": "live-tests-secret-key-0123456789abcdef"}
    server = start_server(folder, env, "live")
    try:
        wait_ready(server)
        token = httpx.post(f"{server.base_url}/auth/login",
                           json={"username": "admin", "password": ADMIN_PASSWORD}).json()["access_token"]
        yield LiveApi(server, token, env)
    finally:
        server.stop()
        if request.param == "postgres":
            asyncio.run(truncate_all(request.getfixturevalue("postgres_url")))


LIVE_RESUME_WINDOW_S = 2
