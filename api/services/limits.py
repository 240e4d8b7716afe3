"""Requests/minute, tokens/minute and monthly token quotas, per API key and per user, checked before a generation
starts. The counters live in the database (``rate_windows``, ``usage_logs``), so every replica shares them.

Requests are counted at admission (a conditional increment, so two replicas cannot both take the last slot);
tokens are counted when the usage writer stores the finished request, so a minute's token limit and the monthly
quota refuse the *next* request once they are reached (a running answer is never cut off).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.services.auth import Principal
from api.services.errors import RateLimited
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
    return any(subject.requests_per_minute is not None or subject.tokens_per_minute is not None
               or subject.monthly_token_quota is not None for subject in subjects_of(principal, principal.api_key))


async def admit(session: AsyncSession, principal: Principal) -> None:
    """Count this request against the caller's limits (committed at once, so every replica sees it), or raise
    ``RateLimited`` (429) without counting it."""
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
        if subject.tokens_per_minute is not None:
            used = await session.scalar(select(RateWindow.tokens).where(
                RateWindow.subject == subject.key, RateWindow.minute == minute)) or 0
            if used >= subject.tokens_per_minute:
                raise _per_minute(f"{subject.label} has used its {subject.tokens_per_minute} tokens per minute",
                                  now)
    for subject in subjects:
        if subject.requests_per_minute is not None and not await _take_request(
                session, subject.key, minute, subject.requests_per_minute):
            await session.rollback()  # the other subjects' counts for this refused request go too
            raise _per_minute(f"{subject.label} is limited to {subject.requests_per_minute} requests per minute",
                              now)
    await session.commit()


async def _take_request(session: AsyncSession, subject: str, minute: int, limit: int) -> bool:
    increment = (update(RateWindow).where(RateWindow.subject == subject, RateWindow.minute == minute,
                                          RateWindow.requests < limit).values(requests=RateWindow.requests + 1))
    if (await session.execute(increment)).rowcount:  # type: ignore[attr-defined]
        return True
    if limit < 1:
        return False
    try:
        async with session.begin_nested():
            session.add(RateWindow(subject=subject, minute=minute, requests=1, tokens=0))
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
