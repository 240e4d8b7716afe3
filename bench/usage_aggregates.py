"""How fast the usage aggregates are at a million usage rows: each `/admin/usage` grouping and a user's own
`/v1/usage`, computed by the same service functions the routes call, on SQLite and (when
``LLMWS_TEST_POSTGRES_URL`` is set) PostgreSQL. Rows span 30 days, 200 users, 400 keys, 6 models.
Run: `.venv/bin/python bench/usage_aggregates.py [--rows 1000000]`. The PostgreSQL database is emptied first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from api.services.usage import reports as usage_reports
from api.settings import Settings
from db import migrate
from db.models import ApiKey, UsageLog, User
from db.session import create_engine, create_sessionmaker

USERS, KEYS, MODELS = 200, 400, ["smollm2", "llama-3-8b", "qwen-7b", "gpt-4o", "mistral", "phi-3"]
STATUSES = ["ok"] * 17 + ["cancelled", "error", "rejected"]


async def fill(engine: AsyncEngine, rows: int) -> None:
    random.seed(7)
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        await connection.execute(insert(User), [{"id": i, "username": f"user{i}", "password_hash": "x", "role": "user",
                                                 "is_active": True, "created_at": now, "updated_at": now}
                                                for i in range(1, USERS + 1)])
        await connection.execute(insert(ApiKey), [{"id": i, "user_id": 1 + i % USERS, "name": f"k{i}",
                                                   "prefix": f"sk-llmws-{i:06d}", "key_hash": f"{i:064d}",
                                                   "created_at": now} for i in range(1, KEYS + 1)])
    batch = 20_000
    for start in range(0, rows, batch):
        values = []
        for _ in range(min(batch, rows - start)):
            key = random.randint(1, KEYS)
            values.append({"request_id": "r", "user_id": 1 + key % USERS, "api_key_id": key,
                           "model": random.choice(MODELS), "backend": "local",
                           "prompt_tokens": random.randint(10, 2000), "completion_tokens": random.randint(1, 800),
                           "ttft_ms": random.uniform(20, 900), "latency_ms": random.uniform(100, 20_000),
                           "tokens_per_s": random.uniform(5, 200), "status": random.choice(STATUSES),
                           "count_source": "engine",
                           "created_at": now - timedelta(seconds=random.uniform(0, 30 * 86400))})
        async with engine.begin() as connection:
            await connection.execute(insert(UsageLog), values)


async def measure(label: str, url: str, rows: int) -> None:
    # The rows go in before revision 0003, whose upgrade builds the daily rollup from them (as on an install that
    # upgrades); afterwards the usage writer keeps the rollup current.
    await asyncio.to_thread(migrate.upgrade, url, "0002")  # Alembic runs its own event loop
    engine = create_engine(url)
    started = time.perf_counter()
    await fill(engine, rows)
    print(f"\n{label}: {rows:,} usage rows written in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    await asyncio.to_thread(migrate.upgrade, url)
    async with engine.connect() as connection:
        rollup = await connection.scalar(text("SELECT count(*) FROM usage_daily"))
    print(f"daily rollup built in {time.perf_counter() - started:.1f} s: {rollup:,} rows")
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(text("ANALYZE usage_daily"))
        else:
            await connection.execute(text("ANALYZE"))
    sessionmaker = create_sessionmaker(engine)
    until = datetime.now(UTC)
    print(f"{'query':<34} {'period':>7} {'groups':>7} {'ms':>8}")
    for days in (1, 30):
        since = until - timedelta(days=days - 1, seconds=1)
        for group in ("day", "model", "user", "key", "status"):
            await timed(sessionmaker, f"/admin/usage group_by={group}", days, group, since, until, None)
        await timed(sessionmaker, "/v1/usage (one user) group_by=day", days, "day", since, until, 42)
    await engine.dispose()


async def timed(sessionmaker, label: str, days: int, group: str, since: datetime, until: datetime,  # noqa: ANN001
                user_id: int | None) -> None:
    async with sessionmaker() as session:
        session: AsyncSession
        started = time.perf_counter()
        period = usage_reports.period(since, until)
        rows = await usage_reports.aggregate(session, group, period, user_id=user_id)  # type: ignore[arg-type]
        await usage_reports.totals(session, period, user_id=user_id)
        elapsed = (time.perf_counter() - started) * 1000
    print(f"{label:<34} {days:>5} d {len(rows):>7} {elapsed:>8.0f}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        await measure("SQLite", f"sqlite+aiosqlite:///{Path(folder) / 'usage.db'}", args.rows)
    postgres = os.environ.get("LLMWS_TEST_POSTGRES_URL")
    if postgres:
        url = Settings(_env_file=None, database_url=postgres).resolved_database_url  # type: ignore[call-arg]
        engine = create_engine(url)
        async with engine.begin() as connection:
            await connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await connection.execute(text("CREATE SCHEMA public"))
        await engine.dispose()
        await measure("PostgreSQL", url, args.rows)


if __name__ == "__main__":
    asyncio.run(main())
