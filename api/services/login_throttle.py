"""Slowing down password guessing, per username and per client address.

Failures are read from the audit log, so every replica sharing the database sees the same count. Past the
threshold each further failure doubles the wait, up to the counting window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AuditLog
from db.types import utcnow

LOGIN_FAILED = "auth.login_failed"
FIRST_DELAY = timedelta(seconds=5)
# A shared address (NAT, an office proxy) legitimately sees more failures than one account.
ADDRESS_ALLOWANCE_FACTOR = 4


@dataclass(frozen=True)
class ThrottlePolicy:
    max_failures: int
    window: timedelta


async def retry_after_seconds(
    session: AsyncSession, policy: ThrottlePolicy, username: str, ip: str | None, now: datetime | None = None
) -> int:
    """Seconds the caller must wait before another attempt for this username/address; 0 when free to try."""
    now = now or utcnow()
    since = now - policy.window
    waits = [await _wait_for(session, policy, AuditLog.subject == username, policy.max_failures, since, now)]
    if ip:
        limit = policy.max_failures * ADDRESS_ALLOWANCE_FACTOR
        waits.append(await _wait_for(session, policy, AuditLog.ip == ip, limit, since, now))
    return max(waits)


async def _wait_for(
    session: AsyncSession, policy: ThrottlePolicy, who: ColumnElement[bool], limit: int, since: datetime, now: datetime
) -> int:
    query = select(func.count(), func.max(AuditLog.created_at)).where(
        AuditLog.action == LOGIN_FAILED, AuditLog.created_at >= since, who
    )
    failures, last_failure = (await session.execute(query)).one()
    if failures < limit or last_failure is None:
        return 0
    delay = min(FIRST_DELAY * 2 ** (failures - limit), policy.window)
    remaining = (last_failure + delay - now).total_seconds()
    return max(0, math.ceil(remaining))
