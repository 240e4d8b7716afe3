"""Requests/minute, tokens/minute and monthly token quotas, per API key and per user, checked before a generation
starts. The counters live in the database (``rate_windows``, ``usage_logs``), so every replica shares them.

Both per-minute counts are taken at admission by a conditional increment, so two replicas cannot both take the
last of a limit. A request counts as ``n`` requests (one per choice it asks for). Against a tokens/minute limit
it reserves the most it can use (its prompt and ``max_tokens`` × n) while the window is not yet full; the usage
writer settles the reservation to the real count when it stores the finished request. Concurrent long requests
therefore overshoot a token limit by one request's reservation at most. The monthly quota is counted from the
stored usage, so it refuses the *next* request once it is reached (a running answer is never cut off).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from api.services.accounts.principal import Principal
from api.services.errors import RateLimited
from api.services.usage.writer import Reservation
from db.models import ApiKey, RateWindow, UsageLog, User


@dataclass(frozen=True)
class Subject:
    key: str  # "key:12", "user:3"
    label: str  # for messages: "API key 'ci'", "user alice"
    requests_per_minute: int | None
    tokens_per_minute: int | None
    monthly_token_quota: int | None
    usage_filter: object  # the usage_logs column this subject is counted by, compared to its id
    usage_id: int


def subjects_of(principal: Principal, key: ApiKey | None) -> list[Subject]:
    user: User = principal.user
    found = [Subject(f"user:{user.id}", f"user {user.username}", user.requests_per_minute,
                     user.tokens_per_minute, user.monthly_token_quota, UsageLog.user_id, user.id)]
    if key is not None:
        found.append(Subject(f"key:{key.id}", f"API key '{key.name}'", key.requests_per_minute,
                             key.tokens_per_minute, key.monthly_token_quota, UsageLog.api_key_id, key.id))
    return found


def has_limits(principal: Principal) -> bool:
    """Whether any limit applies to the caller (the principal carries its user's and key's rows)."""
    # The rows' own columns, not `subjects_of`: the gateway's fast path asks this of every request.
    for row in (principal.user, principal.api_key):
        if row is not None and (row.requests_per_minute is not None or row.tokens_per_minute is not None
                                or row.monthly_token_quota is not None):
            return True
    return False


async def admit(session: AsyncSession, principal: Principal, *, choices: int = 1,
                reserve_tokens: int = 0) -> Reservation | None:
    """Count this request (``choices`` requests, ``reserve_tokens`` tokens) against the caller's limits, committed
    at once so every replica sees it; or raise ``RateLimited`` (429) without counting anything. The reservation,
    if any subject has a tokens/minute limit, goes with the request's usage record to be settled."""
    now = time.time()
    minute = int(now) // 60
    key = principal.api_key
    if key is None and principal.api_key_id is not None:
        key = await session.get(ApiKey, principal.api_key_id)
    subjects = subjects_of(principal, key)
    for subject in subjects:
        if subject.monthly_token_quota is not None:
            used = await _tokens_this_month(session, subject, now)
            if used >= subject.monthly_token_quota:
                raise RateLimited(
                    f"{subject.label} has used its monthly quota of {subject.monthly_token_quota} tokens",
                    retry_after_s=_seconds_to_next_month(now), code="insufficient_quota",
                    error_type="insufficient_quota")
    reserved: list[str] = []
    for subject in subjects:
        # Tokens: admitted while the window is not full yet (a request larger than the whole limit still runs
        # in an empty minute). Requests: all n must fit.
        if subject.tokens_per_minute is not None:
            if not await _take(session, subject.key, minute, RateWindow.tokens, reserve_tokens,
                               ceiling=subject.tokens_per_minute - 1):
                await session.rollback()  # what this refused request counted elsewhere goes too
                raise _per_minute(f"{subject.label} has used its {subject.tokens_per_minute} tokens per minute", now)
            reserved.append(subject.key)
        if subject.requests_per_minute is not None and not await _take(
                session, subject.key, minute, RateWindow.requests, choices,
                ceiling=subject.requests_per_minute - choices):
            await session.rollback()
            asked = f" (this request asks for {choices} choices, each counted)" if choices > 1 else ""
            raise _per_minute(f"{subject.label} is limited to {subject.requests_per_minute} requests per minute"
                              f"{asked}", now)
    await session.commit()
    return Reservation(minute, reserve_tokens, tuple(reserved)) if reserved else None


async def _take(session: AsyncSession, subject: str, minute: int, column: InstrumentedAttribute[int], amount: int,
                *, ceiling: int) -> bool:
    """Add ``amount`` to the subject's window in ``column`` if it holds at most ``ceiling`` so far."""
    increment = (update(RateWindow).where(RateWindow.subject == subject, RateWindow.minute == minute,
                                          column <= ceiling).values({column: column + amount}))
    if (await session.execute(increment)).rowcount:  # type: ignore[attr-defined]
        return True
    if ceiling < 0:
        return False
    try:
        async with session.begin_nested():
            session.add(RateWindow(subject=subject, minute=minute, **{"requests": 0, "tokens": 0,
                                                                      column.key: amount}))
        return True
    except IntegrityError:  # the window exists: full, or just created by another replica
        return bool((await session.execute(increment)).rowcount)  # type: ignore[attr-defined]


async def _tokens_this_month(session: AsyncSession, subject: Subject, now: float) -> int:
    start = datetime.fromtimestamp(now, UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    total = func.coalesce(func.sum(UsageLog.prompt_tokens + UsageLog.completion_tokens), 0)
    column = subject.usage_filter
    query = select(total).where(column == subject.usage_id, UsageLog.created_at >= start)  # type: ignore[operator]
    return int(await session.scalar(query) or 0)


def _per_minute(message: str, now: float) -> RateLimited:
    return RateLimited(message, retry_after_s=max(1, 60 - int(now) % 60), code="rate_limit_exceeded",
                       error_type="rate_limit_exceeded")


def _seconds_to_next_month(now: float) -> int:
    today = datetime.fromtimestamp(now, UTC)
    following = (today.replace(year=today.year + 1, month=1) if today.month == 12
                 else today.replace(month=today.month + 1))
    start = following.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return max(1, int(start.timestamp() - now))
