"""Writing and reading audit rows. The caller's unit of work commits them with the change they describe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AuditLog


def record(
    session: AsyncSession,
    action: str,
    *,
    actor_user_id: int | None = None,
    subject: str | None = None,
    target_type: str | None = None,
    target_id: object | None = None,
    ip: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditLog:
    row = AuditLog(
        action=action,
        actor_user_id=actor_user_id,
        subject=subject[:200] if subject else subject,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        ip=ip,
        detail=detail,
    )
    session.add(row)
    return row


async def list_entries(
    session: AsyncSession, *, action: str | None = None, offset: int = 0, limit: int = 100
) -> Sequence[AuditLog]:
    query = select(AuditLog).order_by(AuditLog.id.desc()).offset(offset).limit(limit)
    if action:
        query = query.where(AuditLog.action == action)
    return (await session.execute(query)).scalars().all()
