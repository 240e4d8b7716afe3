"""The API in process (its real lifespan, a real database) driven by httpx, plus helpers to make users."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from api.services.accounts.users import create_user
from api.services.gateway.backends import Backend
from api.settings import Settings
from db.models import Role, User
from tests.conftest import ADMIN_PASSWORD, BACKENDS, make_settings, truncate_all
from tests.support.access import USER_PASSWORD, login
from tests.support.in_process import client_from, running_app
from tests.support.live import LiveApi, serving


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path / "var", database_url)


@pytest.fixture
def extra_backends() -> Sequence[Backend]:
    """Backends the app serves beside the local model; a module that wants one (an echo engine) overrides this."""
    return ()


@pytest.fixture
def model_loaded() -> bool:
    """Whether ``app`` waits for the local model to load before the test; modules that generate with it say so."""
    return False


@pytest.fixture
async def app(settings: Settings, extra_backends: Sequence[Backend], model_loaded: bool) -> AsyncIterator[FastAPI]:
    async with running_app(settings, extra_backends=extra_backends, model_loaded=model_loaded) as application:
        yield application


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
    try:
        with serving(folder, live_env(folder, url, chat_model_dir.parent), "live") as live:
            yield live
    finally:
        if request.param == "postgres":
            asyncio.run(truncate_all(request.getfixturevalue("postgres_url")))


@pytest.fixture(scope="module")
def demo_live_api(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, demo_folder: Path
                  ) -> Iterator[LiveApi]:
    """`llmws serve` serving the demo model (its converted folder, as ``demo``) on SQLite, for a module's tests."""
    folder = tmp_path_factory.mktemp("demo-live")
    (folder / "models").mkdir()
    (folder / "models" / "demo").symlink_to(demo_folder, target_is_directory=True)
    shutil.copyfile(sqlite_template, folder / "llmws.db")
    with serving(folder, live_env(folder, f"sqlite:///{folder / 'llmws.db'}", folder / "models"), "demo") as live:
        yield live


def live_env(folder: Path, database_url: str, model_dirs: Path) -> dict[str, str]:
    """The environment of a live test server: its own data folder, database and model folders."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("LLMWS_")}
    return env | {
        "LLMWS_DATA_DIR": str(folder / "var"), "LLMWS_DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1",
        "LLMWS_MODEL_DIRS": str(model_dirs), "LLMWS_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "LLMWS_STREAM_RESUME_WINDOW": str(LIVE_RESUME_WINDOW_S), "LLMWS_USAGE_FLUSH_INTERVAL": "1",
        "LLMWS_PROVIDER_HEALTH_INTERVAL": "1", "LLMWS_AUTH_CACHE_TTL": "1",
        # Every test's client is 127.0.0.1: the per-address cap on password work (tested in test_auth.py)
        # would otherwise refuse logins once a run (or a repeated one) passes 100 in a window.
        "LLMWS_PASSWORD_CHECKS_PER_ADDRESS": "1000000",
        # Replicas share the secret key (what the WebSocket buffers are sealed with).
        "LLMWS_SECRET_KEY": "live-tests-secret-key-0123456789abcdef"}


LIVE_RESUME_WINDOW_S = 2
