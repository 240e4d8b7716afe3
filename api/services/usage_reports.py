"""Usage aggregates, computed in SQL (each filter starts with a time range the usage indexes serve)."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.services.errors import InvalidInput
from db.models import ApiKey, UsageLog, User
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


def period(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    until = until or utcnow()
    since = since or until - DEFAULT_PERIOD
    if since >= until:
        raise InvalidInput("'since' must be before 'until'", param="since")
    return since, until


def _day(session: AsyncSession) -> ColumnElement[Any]:
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", UsageLog.created_at), "YYYY-MM-DD")
    return func.date(UsageLog.created_at)  # SQLite keeps UTC text


def _group_column(session: AsyncSession, group_by: GroupBy) -> ColumnElement[Any]:
    return {"day": _day(session), "model": UsageLog.model, "backend": UsageLog.backend, "status": UsageLog.status,
            "user": func.coalesce(User.username, func.cast(UsageLog.user_id, User.username.type)),
            "key": func.coalesce(ApiKey.prefix, "(no key)")}[group_by]


async def aggregate(session: AsyncSession, group_by: GroupBy, since: datetime, until: datetime, *,
                    user_id: int | None = None) -> list[UsageRow]:
    group = _group_column(session, group_by).label("grp")
    query = select(
        group, func.count(), func.coalesce(func.sum(UsageLog.prompt_tokens), 0),
        func.coalesce(func.sum(UsageLog.completion_tokens), 0), func.avg(UsageLog.ttft_ms),
        func.avg(UsageLog.latency_ms),
    ).where(UsageLog.created_at >= since, UsageLog.created_at < until)
    if group_by == "user":
        query = query.outerjoin(User, User.id == UsageLog.user_id)
    if group_by == "key":
        query = query.outerjoin(ApiKey, ApiKey.id == UsageLog.api_key_id)
    if user_id is not None:
        query = query.where(UsageLog.user_id == user_id)
    query = query.group_by(group).order_by(group).limit(MAX_GROUPS)
    return [UsageRow(None if name is None else str(name), requests, int(prompt), int(completion),
                     int(prompt) + int(completion), None if ttft is None else round(float(ttft), 1),
                     None if latency is None else round(float(latency), 1))
            for name, requests, prompt, completion, ttft, latency in (await session.execute(query)).all()]


async def totals(session: AsyncSession, since: datetime, until: datetime, *, user_id: int | None = None
                 ) -> UsageRow:
    query = select(func.count(), func.coalesce(func.sum(UsageLog.prompt_tokens), 0),
                   func.coalesce(func.sum(UsageLog.completion_tokens), 0), func.avg(UsageLog.ttft_ms),
                   func.avg(UsageLog.latency_ms)).where(UsageLog.created_at >= since, UsageLog.created_at < until)
    if user_id is not None:
        query = query.where(UsageLog.user_id == user_id)
    requests, prompt, completion, ttft, latency = (await session.execute(query)).one()
    return UsageRow(None, requests, int(prompt), int(completion), int(prompt) + int(completion),
                    None if ttft is None else round(float(ttft), 1),
                    None if latency is None else round(float(latency), 1))


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
