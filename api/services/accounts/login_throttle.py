"""Slowing down password guessing per account and address, and capping the password work one address causes.

Every password check is first recorded in the audit log as a failed attempt, committed on its own, and only then
counted against the earlier ones: concurrent guesses cannot all slip through before any of them is written, and
every replica sharing the database sees the same count. The row is settled afterwards: `auth.login` when the
password was right, `auth.login_throttled` when the attempt was refused unchecked.

Failures are counted per (username, address) and per address, never per username alone: a stranger's wrong
guesses from elsewhere must not lock the owner out of their own account. Past a threshold each further failure
doubles the wait, up to the counting window. Independently, every password hash an address causes (logins right
or wrong, password changes, registrations: each is an Argon2 hash, costly on purpose) counts against a volume
allowance per window, so no address can keep the server's CPUs busy hashing.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services import audit
from api.services.errors import RateLimited
from api.settings import Settings
from db.models import AuditLog
from db.types import utcnow

log = logging.getLogger(__name__)

LOGIN_FAILED = "auth.login_failed"
LOGIN_THROTTLED = "auth.login_throttled"
REGISTER_ATTEMPT = "auth.register_attempt"
REGISTER_THROTTLED = "auth.register_throttled"
# Settled actions of attempts that hashed a password (auth.py settles them); throttled attempts hashed nothing.
PASSWORD_WORK = (LOGIN_FAILED, "auth.login", "auth.login_refused", "auth.password_checked", REGISTER_ATTEMPT)
FIRST_DELAY = timedelta(seconds=5)
# A shared address (NAT, an office proxy) legitimately sees more failures than one account.
ADDRESS_ALLOWANCE_FACTOR = 4


@dataclass(frozen=True)
class ThrottlePolicy:
    max_failures: int
    window: timedelta
    password_checks_per_address: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ThrottlePolicy:
        return cls(settings.login_max_failures, settings.login_failure_window,
                   settings.password_checks_per_address)


async def begin_attempt(
    sessionmaker: async_sessionmaker[AsyncSession], policy: ThrottlePolicy, username: str, ip: str | None,
    *, actor_user_id: int | None = None,
) -> int:
    """Record a password attempt as failed before it is checked; refuse it when earlier attempts say so.

    Returns the attempt's audit row id, for ``settle_attempt``; raises ``RateLimited`` when throttled.
    """
    async with sessionmaker() as session:
        attempt = audit.record(session, LOGIN_FAILED, actor_user_id=actor_user_id, subject=username, ip=ip)
        await session.commit()
        limits = _Limits(session, policy, attempt.id)
        waits = [await limits.failures(_from_address(ip) & (AuditLog.subject == username), policy.max_failures)]
        if ip:
            waits += [await limits.failures(AuditLog.ip == ip, policy.max_failures * ADDRESS_ALLOWANCE_FACTOR),
                      await limits.password_work(ip)]
        wait = max(waits)
        if wait:
            attempt.action = LOGIN_THROTTLED
            await session.commit()
            log.warning("password attempt for %r from %s throttled; retry in %ss", username, ip, wait)
            raise RateLimited("too many login attempts; try again later", retry_after_s=wait, code="login_throttled")
        return attempt.id


async def begin_registration(
    sessionmaker: async_sessionmaker[AsyncSession], policy: ThrottlePolicy, username: str, ip: str | None
) -> None:
    """Record a registration attempt before its password is hashed; refuse it when the address has done too much."""
    if not ip:
        return
    async with sessionmaker() as session:
        attempt = audit.record(session, REGISTER_ATTEMPT, subject=username, ip=ip)
        await session.commit()
        wait = await _Limits(session, policy, attempt.id).password_work(ip)
        if wait:
            attempt.action = REGISTER_THROTTLED
            await session.commit()
            log.warning("registration of %r from %s throttled; retry in %ss", username, ip, wait)
            raise RateLimited("too many attempts from this address; try again later", retry_after_s=wait,
                              code="registration_throttled")


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


def _from_address(ip: str | None) -> ColumnElement[bool]:
    return AuditLog.ip == ip if ip else AuditLog.ip.is_(None)


def failures_query(who: ColumnElement[bool], since: datetime, attempt_id: int) -> Select[tuple[int, datetime]]:
    """Failures before this attempt (lower ids) in the window: their count and the latest one's time."""
    return select(func.count(), func.max(AuditLog.created_at)).where(
        who, AuditLog.action == LOGIN_FAILED, AuditLog.created_at >= since, AuditLog.id < attempt_id)


def password_work_query(ip: str, since: datetime, attempt_id: int) -> Select[tuple[int, datetime]]:
    """Password hashes an address caused before this attempt in the window: their count and the earliest one's."""
    return select(func.count(), func.min(AuditLog.created_at)).where(
        AuditLog.ip == ip, AuditLog.action.in_(PASSWORD_WORK), AuditLog.created_at >= since,
        AuditLog.id < attempt_id)


class _Limits:
    """The throttle's checks for one attempt, each answering the seconds to wait (0: free to go on)."""

    def __init__(self, session: AsyncSession, policy: ThrottlePolicy, attempt_id: int) -> None:
        self._session, self._policy, self._attempt_id = session, policy, attempt_id
        self._now = utcnow()
        self._since = self._now - policy.window

    async def failures(self, who: ColumnElement[bool], limit: int) -> int:
        """Past `limit` failures, each further one doubles the wait after the latest."""
        query = failures_query(who, self._since, self._attempt_id)
        count, last_failure = (await self._session.execute(query)).one()
        if count < limit or last_failure is None:
            return 0
        delay = min(FIRST_DELAY * 2 ** (count - limit), self._policy.window)
        return self._seconds_until(last_failure + delay)

    async def password_work(self, ip: str) -> int:
        """A sliding window: once the allowance is used up, wait until the earliest counted attempt leaves it."""
        query = password_work_query(ip, self._since, self._attempt_id)
        count, earliest = (await self._session.execute(query)).one()
        if count < self._policy.password_checks_per_address or earliest is None:
            return 0
        return max(1, self._seconds_until(earliest + self._policy.window))

    def _seconds_until(self, moment: datetime) -> int:
        return max(0, math.ceil((moment - self._now).total_seconds()))
