"""Alembic driven from code: upgrade, downgrade, current revision, and whether a database is at head."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import migrations
from db.session import ensure_sqlite_file

MIGRATIONS_DIR = Path(migrations.__file__).parent


def alembic_config(database_url: str) -> Config:
    """An Alembic config for this URL that works from any working directory and from an installed package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on '%' in passwords.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    ensure_sqlite_file(database_url)
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    ensure_sqlite_file(database_url)
    command.downgrade(alembic_config(database_url), revision)


@cache
def head_revisions() -> tuple[str, ...]:
    """The revisions the code expects; read from the scripts once (they do not change while running)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return tuple(ScriptDirectory.from_config(config).get_heads())


@dataclass(frozen=True)
class SchemaState:
    current: str | None
    heads: tuple[str, ...]

    @property
    def at_head(self) -> bool:
        return self.current is not None and self.current in self.heads


async def schema_state(engine: AsyncEngine) -> SchemaState:
    def current(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        revision = await connection.run_sync(current)
    return SchemaState(current=revision, heads=head_revisions())


class SchemaNotCurrent(RuntimeError):
    """The database is behind the code's migrations: nothing should run on it."""

    def __init__(self, state: SchemaState) -> None:
        super().__init__(
            f"the database schema is at revision {state.current or 'none (empty database)'}, "
            f"the code needs {', '.join(state.heads)}; run `llmws db upgrade` first"
        )
