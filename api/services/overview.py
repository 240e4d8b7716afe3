"""The admin dashboard's figures: accounts, today's traffic (UTC) with latency percentiles, and requests per hour.

Sums and hourly groups are computed in SQL over ``usage_logs``; percentiles in Python over the day's latest
``PERCENTILE_SAMPLE`` rows, so a busy day costs a bounded read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.functions import HOUR_FORMAT, utc_hour
from db.models import Role, UsageLog, User
from db.types import utcnow

ERROR_STATUS = "error"  # cancelled (the client left) and rejected (a limit, a full queue) are not errors
UNSERVED_STATUS = "rejected"  # refused before generating: its latency says nothing about serving
PERCENTILE_SAMPLE = 50_000
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class UserCounts:
    total: int
    active: int
    admins: int


@dataclass(frozen=True)
class DayTraffic:
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    errors: int
    error_rate: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p50_ms: float | None


@dataclass(frozen=True)
class HourTraffic:
    hour: datetime
    requests: int
    errors: int
    tokens: int


@dataclass(frozen=True)
class Overview:
    users: UserCounts
    today: DayTraffic
    series: list[HourTraffic]


async def overview(session: AsyncSession, hours: int, *, now: datetime | None = None) -> Overview:
    now = now or utcnow()
    return Overview(await user_counts(session), await day_traffic(session, now),
                    await hourly_traffic(session, hours, now))


async def user_counts(session: AsyncSession) -> UserCounts:
    query = select(func.count(), _count_where(User.is_active.is_(True)), _count_where(User.role == Role.ADMIN.value))
    total, active, admins = (await session.execute(query)).one()
    return UserCounts(int(total), int(active or 0), int(admins or 0))


def _count_where(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


async def day_traffic(session: AsyncSession, now: datetime) -> DayTraffic:
    """The current UTC day so far."""
    start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    sums = select(func.count(), func.coalesce(func.sum(UsageLog.prompt_tokens), 0),
                  func.coalesce(func.sum(UsageLog.completion_tokens), 0),
                  _count_where(UsageLog.status == ERROR_STATUS)).where(UsageLog.created_at >= start)
    requests, prompt, completion, errors = (int(value) for value in (await session.execute(sums)).one())
    timings = (select(UsageLog.latency_ms, UsageLog.ttft_ms)
               .where(UsageLog.created_at >= start, UsageLog.status != UNSERVED_STATUS)
               .order_by(UsageLog.created_at.desc()).limit(PERCENTILE_SAMPLE))
    rows = (await session.execute(timings)).all()
    latencies = sorted(latency for latency, _ in rows if latency is not None)
    ttfts = sorted(ttft for _, ttft in rows if ttft is not None)
    return DayTraffic(requests, prompt, completion, prompt + completion, errors,
                      round(errors / requests, 4) if requests else 0.0,
                      percentile(latencies, 50), percentile(latencies, 95), percentile(ttfts, 50))


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile of sorted values, interpolating between neighbours (numpy's default)."""
    if not ordered:
        return None
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (rank - low), 1)


async def hourly_traffic(session: AsyncSession, hours: int, now: datetime) -> list[HourTraffic]:
    """One entry per UTC hour for the last ``hours`` hours, the current one included, oldest first."""
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    first = current - (hours - 1) * HOUR
    hour = utc_hour(UsageLog.created_at).label("hour")
    query = (select(hour, func.count(), _count_where(UsageLog.status == ERROR_STATUS),
                    func.coalesce(func.sum(UsageLog.prompt_tokens + UsageLog.completion_tokens), 0))
             .where(UsageLog.created_at >= first).group_by(hour))
    seen = {datetime.strptime(name, HOUR_FORMAT).replace(tzinfo=UTC): (int(requests), int(errors), int(tokens))
            for name, requests, errors, tokens in (await session.execute(query)).all()}
    starts = [first + index * HOUR for index in range(hours)]
    return [HourTraffic(start, *seen.get(start, (0, 0, 0))) for start in starts]
