"""Acceptance: `upgrade head` on an empty database, no drift between models and migrations, `downgrade base`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from db.base import Base
from db.migrate import alembic_config
from tests.conftest import BACKENDS, postgres_url_from_env


@pytest.fixture(params=BACKENDS)
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """A database with no tables at all: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        engine = create_async_engine(url)
        yield url, engine
        await engine.dispose()
        return
    url = postgres_url_from_env()
    if url is None:
        pytest.skip("LLMWS_TEST_POSTGRES_URL is not set: PostgreSQL variant not run")
    schema = f"llmws_migration_{uuid.uuid4().hex[:8]}"
    engine = create_async_engine(url, connect_args={"server_settings": {"search_path": schema}})
    async with engine.begin() as connection:
        await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield url, engine
    finally:
        async with engine.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await engine.dispose()


async def test_upgrade_check_downgrade(empty_database: tuple[str, AsyncEngine]) -> None:
    url, engine = empty_database
    seen: dict[str, set[str]] = {}

    def cycle(connection: Connection) -> None:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        seen["before"] = set(inspect(connection).get_table_names())
        command.upgrade(config, "head")
        seen["upgraded"] = set(inspect(connection).get_table_names())
        command.check(config)  # raises when the models and the migrations disagree
        command.downgrade(config, "base")
        seen["downgraded"] = set(inspect(connection).get_table_names())

    async with engine.connect() as connection:
        await connection.run_sync(cycle)
        await connection.commit()

    expected = {table.name for table in Base.metadata.sorted_tables}
    assert seen["before"] == set()
    assert seen["upgraded"] == expected | {"alembic_version"}
    assert seen["downgraded"] <= {"alembic_version"}
