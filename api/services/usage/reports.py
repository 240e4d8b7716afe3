"""Usage aggregates, computed in SQL over the per-day rollup (``usage_daily``) the usage writer keeps, so a
month of a million requests sums a few thousand rows."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.services.errors import InvalidInput
from db.models import ApiKey, UsageDaily, User
from db.types import utcnow

GroupBy = Literal["day", "model", "user", "key", "backend", "status"]
DEFAULT_PERIOD = timedelta(days=30)
MAX_GROUPS = 10_000


@dataclass(frozen=True)
class UsageRow:
    group: str | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    avg_ttft_ms: float | None
    avg_latency_ms: float | None


def period(since: datetime | None, until: datetime | None) -> tuple[date, date]:
    """The UTC days a report covers, both included (the rollup is per day): default the last 30."""
    until = until or utcnow()
    since = since or until - DEFAULT_PERIOD
    if since >= until:
        raise InvalidInput("'since' must be before 'until'", param="since")
    return since.astimezone(UTC).date(), until.astimezone(UTC).date()


def _group_column(group_by: GroupBy) -> ColumnElement[Any]:
    return {"day": UsageDaily.day, "model": UsageDaily.model, "backend": UsageDaily.backend,
            "status": UsageDaily.status,
            "user": func.coalesce(User.username, "(deleted user)"),
            "key": func.coalesce(ApiKey.prefix, "(no key)")}[group_by]


def _sums() -> tuple[ColumnElement[Any], ...]:
    return (func.coalesce(func.sum(UsageDaily.requests), 0), func.coalesce(func.sum(UsageDaily.prompt_tokens), 0),
            func.coalesce(func.sum(UsageDaily.completion_tokens), 0),
            func.coalesce(func.sum(UsageDaily.ttft_ms_sum), 0), func.coalesce(func.sum(UsageDaily.ttft_count), 0),
            func.coalesce(func.sum(UsageDaily.latency_ms_sum), 0))


def _row(group: object, sums: tuple[Any, ...]) -> UsageRow:
    requests, prompt, completion, ttft_sum, ttft_count, latency_sum = (float(value) for value in sums)
    return UsageRow(None if group is None else str(group), int(requests), int(prompt), int(completion),
                    int(prompt + completion), round(ttft_sum / ttft_count, 1) if ttft_count else None,
                    round(latency_sum / requests, 1) if requests else None)


def _in_period(query: Select[Any], days: tuple[date, date], user_id: int | None) -> Select[Any]:
    query = query.where(UsageDaily.day >= days[0], UsageDaily.day <= days[1])
    return query if user_id is None else query.where(UsageDaily.user_id == user_id)


async def aggregate(session: AsyncSession, group_by: GroupBy, days: tuple[date, date], *,
                    user_id: int | None = None) -> list[UsageRow]:
    group = _group_column(group_by).label("grp")
    query = _in_period(select(group, *_sums()), days, user_id)
    if group_by == "user":
        query = query.outerjoin(User, User.id == UsageDaily.user_id)
    if group_by == "key":
        query = query.outerjoin(ApiKey, ApiKey.id == UsageDaily.api_key_id)
    query = query.group_by(group).order_by(group).limit(MAX_GROUPS)
    return [_row(name, tuple(sums)) for name, *sums in (await session.execute(query)).all()]


async def totals(session: AsyncSession, days: tuple[date, date], *, user_id: int | None = None) -> UsageRow:
    return _row(None, tuple((await session.execute(_in_period(select(*_sums()), days, user_id))).one()))


async def report(session: AsyncSession, group_by: GroupBy, days: tuple[date, date], *, user_id: int | None = None
                 ) -> tuple[UsageRow, list[UsageRow]]:
    """Totals and groups from one read, so they agree even while the usage writer adds rows."""
    rows = await aggregate(session, group_by, days, user_id=user_id)
    if len(rows) < MAX_GROUPS:
        return _total_of(rows), rows
    return await totals(session, days, user_id=user_id), rows


def _total_of(rows: list[UsageRow]) -> UsageRow:
    requests = sum(row.requests for row in rows)
    timed = [(row.avg_ttft_ms, row.requests) for row in rows if row.avg_ttft_ms is not None]
    latency = [(row.avg_latency_ms, row.requests) for row in rows if row.avg_latency_ms is not None]
    return UsageRow(None, requests, sum(row.prompt_tokens for row in rows),
                    sum(row.completion_tokens for row in rows), sum(row.total_tokens for row in rows),
                    _weighted(timed), _weighted(latency))


def _weighted(pairs: list[tuple[float, int]]) -> float | None:
    weight = sum(count for _, count in pairs)
    return round(sum(value * count for value, count in pairs) / weight, 1) if weight else None


def to_csv(group_by: str, rows: list[UsageRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    fields = list(asdict(rows[0]).keys()) if rows else [*UsageRow.__dataclass_fields__]
    writer.writerow([group_by if name == "group" else name for name in fields])
    for row in rows:
        writer.writerow([_csv_cell(value) for value in asdict(row).values()])
    return out.getvalue()


def _csv_cell(value: object) -> object:
    # A cell starting with = + - @ would be a formula to a spreadsheet; model and user names come from users.
    if isinstance(value, str) and value[:1] in {"=", "+", "-", "@"}:
        return "'" + value
    return value
