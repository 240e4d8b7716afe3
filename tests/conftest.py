"""Shared fixtures: the models (from tests/model_fixtures.py), and databases. Every database test runs on a real
SQLite file and, when ``LLMWS_TEST_POSTGRES_URL`` is set, on that real PostgreSQL too (unreachable then means
failure, not a skip)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api.settings import Settings
from bench.fake_openai import FakeUpstream
from db import migrate
from db.base import Base
from db.session import create_engine
from tests.model_fixtures import (  # noqa: F401 (fixtures, found by name)
    REPO,
    chat_model_dir,
    demo_folder,
    tiny_model,
    tiny_model_dir,
    tokenizer,
)

POSTGRES_ENV = "LLMWS_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(autouse=True)
def _hermetic_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own LLMWS_* variables must not change what the tests see."""
    for name in list(os.environ):
        if name.startswith("LLMWS_") and not name.startswith("LLMWS_TEST_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once; each test gets its own copy."""
    path = tmp_path_factory.mktemp("template") / "llmws.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    return path


def postgres_url_from_env() -> str | None:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        return None
    return Settings(_env_file=None, database_url=url).resolved_database_url  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The PostgreSQL test database, emptied and migrated to head once per run."""
    url = postgres_url_from_env()
    if url is None:
        pytest.skip(f"{POSTGRES_ENV} is not set: PostgreSQL variant not run")

    async def reset() -> None:
        engine = create_engine(url)
        try:
            async with asyncio.timeout(15), engine.begin() as connection:
                await connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
                await connection.execute(text("CREATE SCHEMA public"))
        finally:
            await engine.dispose()

    try:
        asyncio.run(reset())
    except Exception as exc:  # noqa: BLE001 (any failure to reach it is the point)
        pytest.fail(f"{POSTGRES_ENV} is set but PostgreSQL is unreachable: {type(exc).__name__}: {exc}")
    migrate.upgrade(url)
    yield url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> Iterator[str]:
    """A migrated, empty database of each backend, private to the test."""
    if request.param == "sqlite":
        path = tmp_path / "llmws.db"
        shutil.copyfile(sqlite_template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    url = request.getfixturevalue("postgres_url")
    yield url
    asyncio.run(truncate_all(url))


async def truncate_all(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture
async def db_session(database_url: str) -> AsyncIterator[AsyncSession]:
    """A session inside one transaction that is rolled back at the end; commits become savepoints."""
    engine = create_engine(database_url)
    async with engine.connect() as connection:
        transaction = await connection.begin()
        session = AsyncSession(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
        try:
            yield session
        finally:
            await session.close()
            await transaction.rollback()
    await engine.dispose()


def make_settings(data_dir: Path, database_url: str, **overrides: object) -> Settings:
    # No model folders unless a test asks: the API tests must not load the demo model into every app.
    values: dict[str, object] = {"data_dir": data_dir, "database_url": database_url,
                                 "admin_password": ADMIN_PASSWORD, "model_dirs": []}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


ADMIN_PASSWORD = "admin-password-for-tests"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    """A fast fake OpenAI-compatible upstream (bench/fake_openai.py) on a free loopback port, for a module's tests."""
    fake = FakeUpstream()
    fake.start()
    yield fake
    fake.stop()
