"""Slowing down password guessing, per username and per client address.

Every password check is first recorded in the audit log as a failed attempt, committed on its own, and only then
counted against the earlier ones: concurrent guesses cannot all slip through before any of them is written, and
every replica sharing the database sees the same count. The row is settled afterwards: `auth.login` when the
password was right, `auth.login_throttled` when the attempt was refused unchecked. Past the threshold each further
failure doubles the wait, up to the counting window.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services import audit
from api.services.errors import RateLimited
from api.settings import Settings
from db.models import AuditLog
from db.types import utcnow

log = logging.getLogger(__name__)

LOGIN_FAILED = "auth.login_failed"
LOGIN_THROTTLED = "auth.login_throttled"
FIRST_DELAY = timedelta(seconds=5)
# A shared address (NAT, an office proxy) legitimately sees more failures than one account.
ADDRESS_ALLOWANCE_FACTOR = 4


@dataclass(frozen=True)
class ThrottlePolicy:
    max_failures: int
    window: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> ThrottlePolicy:
        return cls(settings.login_max_failures, settings.login_failure_window)


async def begin_attempt(
    sessionmaker: async_sessionmaker[AsyncSession], policy: ThrottlePolicy, username: str, ip: str | None,
    *, actor_user_id: int | None = None,
) -> int:
    """Record a password attempt as failed before it is checked; refuse it when earlier failures say so.

    Returns the attempt's audit row id, for ``settle_attempt``; raises ``RateLimited`` when throttled.
    """
    async with sessionmaker() as session:
        attempt = audit.record(session, LOGIN_FAILED, actor_user_id=actor_user_id, subject=username, ip=ip)
        await session.commit()
        wait = await _retry_after_seconds(session, policy, username, ip, attempt.id)
        if wait:
            attempt.action = LOGIN_THROTTLED
            await session.commit()
            log.warning("password attempt for %r from %s throttled; retry in %ss", username, ip, wait)
            raise RateLimited("too many failed logins; try again later", retry_after_s=wait, code="login_throttled")
        return attempt.id


async def settle_attempt(
    session: AsyncSession, attempt_id: int, action: str, *, actor_user_id: int | None = None,
    target_type: str | None = None, target_id: object | None = None,
) -> None:
    """Give an attempt its final action (it stays `auth.login_failed` when the password was wrong)."""
    values: dict[str, object] = {"action": action}
    if actor_user_id is not None:
        values["actor_user_id"] = actor_user_id
    if target_type is not None:
        values |= {"target_type": target_type, "target_id": None if target_id is None else str(target_id)}
    await session.execute(update(AuditLog).where(AuditLog.id == attempt_id).values(**values))


async def _retry_after_seconds(
    session: AsyncSession, policy: ThrottlePolicy, username: str, ip: str | None, attempt_id: int
) -> int:
    """Seconds to wait judged by the failures recorded before this attempt (lower ids); 0 when free to try."""
    now = utcnow()
    since = now - policy.window
    waits = [await _wait_for(session, policy, AuditLog.subject == username, policy.max_failures, since, now,
                             attempt_id)]
    if ip:
        limit = policy.max_failures * ADDRESS_ALLOWANCE_FACTOR
        waits.append(await _wait_for(session, policy, AuditLog.ip == ip, limit, since, now, attempt_id))
    return max(waits)


async def _wait_for(
    session: AsyncSession, policy: ThrottlePolicy, who: ColumnElement[bool], limit: int, since: datetime,
    now: datetime, attempt_id: int,
) -> int:
    query = select(func.count(), func.max(AuditLog.created_at)).where(
        AuditLog.action == LOGIN_FAILED, AuditLog.created_at >= since, AuditLog.id < attempt_id, who
    )
    failures, last_failure = (await session.execute(query)).one()
    if failures < limit or last_failure is None:
        return 0
    delay = min(FIRST_DELAY * 2 ** (failures - limit), policy.window)
    remaining = (last_failure + delay - now).total_seconds()
    return max(0, math.ceil(remaining))
