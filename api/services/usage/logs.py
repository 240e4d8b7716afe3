"""The raw usage rows, one per served request, for an admin to page through and filter."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.services.errors import InvalidInput
from db.models import ApiKey, UsageLog, User


@dataclass(frozen=True)
class UsageLogFilter:
    model: str | None = None
    user_id: int | None = None
    status: str | None = None
    count_source: str | None = None
    backend: str | None = None
    since: datetime | None = None  # included
    until: datetime | None = None  # excluded

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InvalidInput("'since' must be before 'until'", param="since")
        for column, value in ((UsageLog.model, self.model), (UsageLog.user_id, self.user_id),
                              (UsageLog.status, self.status), (UsageLog.count_source, self.count_source),
                              (UsageLog.backend, self.backend)):
            if value is not None:
                query = query.where(column == value)
        if self.since is not None:
            query = query.where(UsageLog.created_at >= self.since)
        if self.until is not None:
            query = query.where(UsageLog.created_at < self.until)
        return query


async def list_logs(session: AsyncSession, where: UsageLogFilter, offset: int, limit: int
                    ) -> tuple[list[dict[str, Any]], int]:
    """A page of rows, newest first, each with its user's name and key's prefix (None once deleted), and how
    many rows match in all."""
    total = await session.scalar(where.apply(select(func.count()).select_from(UsageLog))) or 0
    query = (where.apply(select(*UsageLog.__table__.columns, User.username,
                                ApiKey.prefix.label("api_key_prefix")).select_from(UsageLog))
             .outerjoin(User, User.id == UsageLog.user_id).outerjoin(ApiKey, ApiKey.id == UsageLog.api_key_id)
             .order_by(UsageLog.created_at.desc(), UsageLog.id.desc()).offset(offset).limit(limit))
    return [dict(row._mapping) for row in await session.execute(query)], total
