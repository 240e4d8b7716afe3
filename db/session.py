"""Async engine and session factory; SQLite gets the pragmas that make it a dependable single-node store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from db.private_files import private_file, private_folder


def ensure_sqlite_file(database_url: str) -> None:
    """SQLite creates the file on first use, but not the folder it lives in, and with the umask's mode: both are
    made owner-only here first (SQLite gives its -wal and -shm files the database file's mode)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        private_file(private_folder(Path(url.database).parent) / Path(url.database).name)


def create_engine(database_url: str, **kwargs: Any) -> AsyncEngine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        ensure_sqlite_file(database_url)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_pre_ping=True, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the one writer; foreign keys are off in SQLite unless asked for.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # A session class of its own, so ORM event listeners (the principal cache's) see only this factory's sessions.
    own_class = type("LLMWSSession", (Session,), {})
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=own_class)
