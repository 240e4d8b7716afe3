"""The usage writer's batching: a flush writes what was recorded before it began, so a busy server writes one
batch per interval rather than a stream of small transactions (rows keep arriving while a write is under way). A row
the database refuses is set aside without holding back the others; a database outage loses nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services.usage.writer import Reservation, UsageRecord, UsageWriter
from db.models import RateWindow, UsageDaily, UsageLog
from db.session import create_engine, create_sessionmaker
from tests.api.conftest import MakeUser
from tests.support.net import free_port


def usage(request_id: str) -> UsageRecord:
    return UsageRecord(request_id, 1, None, "alias", "fake", 7, 10, 3.0, 12.0, None, "ok", "upstream")


class BusyWriter(UsageWriter):
    """Writes nowhere; a request finishes during each write."""

    def __init__(self) -> None:
        super().__init__(None, batch_size=2)  # type: ignore[arg-type]  # no database: _write is replaced
        self.batches: list[list[str]] = []

    async def _write(self, batch: list[tuple[UsageRecord, float]]) -> None:
        self.batches.append([record.request_id for record, _ in batch])
        if len(self.batches) <= 3:  # bounded: a flush that chased them would otherwise never end
            self.record(usage(f"during-{len(self.batches)}"))


async def test_a_flush_writes_what_was_recorded_before_it_in_batches_and_leaves_the_rest() -> None:
    writer = BusyWriter()
    for name in ("a", "b", "c"):
        writer.record(usage(name))
    await writer.flush()
    assert writer.batches == [["a", "b"], ["c"]]
    assert [record.request_id for record, _ in writer._pending] == ["during-1", "during-2"]
    await writer.flush()
    assert writer.batches[2:] == [["during-1", "during-2"]]
    assert [record.request_id for record, _ in writer._pending] == ["during-3"]


def usage_of(request_id: str, user_id: int | None, *, model: str = "alias") -> UsageRecord:
    return UsageRecord(request_id, user_id, None, model, "fake", 7, 10, 3.0, 12.0, None, "ok", "upstream")


def refused_rows(dialect: str) -> list[UsageRecord]:
    """Rows the database itself refuses: a user deleted before the row was written (both databases), and on
    PostgreSQL a request id longer than the column and a NUL in a text field (SQLite stores both)."""
    rows = [usage_of("deleted-user", 10**9)]
    if dialect == "postgresql":
        rows += [usage_of("x" * 65, None), usage_of("nul", None, model="ali\x00as")]
    return rows


async def stored_request_ids(app: FastAPI) -> list[str]:
    async with app.state.services.sessionmaker() as session:
        return sorted((await session.scalars(select(UsageLog.request_id))).all())


async def test_a_row_the_database_refuses_is_set_aside_and_everyone_elses_usage_is_written(
        app: FastAPI, client: httpx.AsyncClient, make_user: MakeUser) -> None:
    user = await make_user("alice")
    writer: UsageWriter = app.state.services.usage_writer
    refused = refused_rows(app.state.services.db_engine.dialect.name)
    good = [usage_of(f"good-{n}", user.id) for n in range(7)]
    for n, record in enumerate(good):
        writer.record(record)
        if n < len(refused):
            writer.record(refused[n])
    await writer.flush()

    assert await stored_request_ids(app) == sorted(record.request_id for record in good)
    assert list(writer.set_aside) == refused and writer.set_aside_total == len(refused)
    assert writer.pending_count == 0
    async with app.state.services.sessionmaker() as session:
        assert await session.scalar(select(func.sum(UsageDaily.requests))) == len(good)
        assert await session.scalar(select(func.sum(RateWindow.tokens))) == 17 * len(good)
    metrics = (await client.get("/metrics")).text
    assert f"llmws_usage_rows_set_aside_total {float(len(refused))}" in metrics

    writer.record(usage_of("later", user.id))  # the writer goes on writing
    await writer.flush()
    assert "later" in await stored_request_ids(app)


class SwitchableDatabase:
    """A sessionmaker that reaches an unreachable database until told the outage is over."""

    def __init__(self, down: async_sessionmaker[AsyncSession], up: async_sessionmaker[AsyncSession]) -> None:
        self.current = down
        self.up = up

    def recover(self) -> None:
        self.current = self.up

    def __call__(self) -> AsyncSession:
        return self.current()


def unreachable_database(database_url: str, tmp_path: Path) -> str:
    if database_url.startswith("sqlite"):
        folder = tmp_path / "gone"
        create_engine(f"sqlite+aiosqlite:///{folder / 'llmws.db'}")  # makes the folder and file, as a start does
        shutil.rmtree(folder)  # then they go (an unmounted volume)
        return f"sqlite+aiosqlite:///{folder / 'llmws.db'}"
    return f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/llmws"  # nothing listens there


async def test_a_database_outage_keeps_every_row_for_the_next_try(database_url: str, tmp_path: Path) -> None:
    down_engine, up_engine = create_engine(unreachable_database(database_url, tmp_path)), create_engine(database_url)
    database = SwitchableDatabase(create_sessionmaker(down_engine), create_sessionmaker(up_engine))
    writer = UsageWriter(database, batch_size=3)  # type: ignore[arg-type]  # called like one
    try:
        records = [usage_of(f"row-{n}", None) for n in range(5)]
        for record in records:
            writer.record(record)
        with pytest.raises((DBAPIError, OSError)):
            await writer.flush()
        assert writer.pending_count == len(records) and writer.set_aside_total == 0

        database.recover()
        await writer.flush()
        async with database() as session:
            stored = (await session.scalars(select(UsageLog.request_id).order_by(UsageLog.request_id))).all()
        assert stored == [record.request_id for record in records] and writer.pending_count == 0
    finally:
        await down_engine.dispose()
        await up_engine.dispose()


def test_a_reservation_is_replaced_by_the_real_count_not_added_to_it() -> None:
    """Admission reserved 50 tokens on the key's window of minute 100; the request used 17 and finished in minute
    101. The key's window gets 17 in all (50 - 33), the user's (nothing reserved there) 17 when it finished."""
    record = UsageRecord("r", 1, 2, "m", "local", 7, 10, 3.0, 12.0, None, "ok", "engine",
                         reservation=Reservation(minute=100, tokens=50, subjects=("key:2",)))
    assert record.window_tokens(101 * 60 + 5) == [(("user:1", 101), 17), (("key:2", 100), -33)]
    assert usage("plain").window_tokens(101 * 60) == [(("user:1", 101), 17)]
