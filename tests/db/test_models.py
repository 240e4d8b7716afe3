"""The schema's own guarantees, checked on each backend: constraints, cascades, and UTC timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ApiKey, AuthSession, Conversation, Message, User


def a_user(name: str = "zoe", **fields: object) -> User:
    return User(username=name, password_hash="$argon2id$placeholder", **fields)


async def test_timestamps_come_back_as_aware_utc(db_session: AsyncSession) -> None:
    user = a_user(last_login_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) + timedelta(hours=0))
    db_session.add(user)
    await db_session.commit()
    db_session.expunge_all()
    loaded = (await db_session.execute(select(User))).scalar_one()
    assert loaded.created_at.tzinfo is not None and loaded.created_at.utcoffset() == timedelta(0)
    assert loaded.last_login_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


async def test_naive_datetimes_are_refused(db_session: AsyncSession) -> None:
    db_session.add(a_user(last_login_at=datetime(2026, 1, 1)))  # noqa: DTZ001 (the point of the test)
    with pytest.raises(StatementError):
        await db_session.flush()


async def test_usernames_are_unique(db_session: AsyncSession) -> None:
    db_session.add(a_user())
    await db_session.flush()
    db_session.add(a_user())
    with pytest.raises(IntegrityError):
        await db_session.flush()


async def test_role_is_constrained(db_session: AsyncSession) -> None:
    db_session.add(a_user(role="superuser"))
    with pytest.raises(IntegrityError):
        await db_session.flush()


async def test_deleting_a_user_deletes_their_credentials_and_conversations(db_session: AsyncSession) -> None:
    user = a_user()
    db_session.add(user)
    await db_session.flush()
    now = datetime.now(UTC)
    conversation = Conversation(owner_id=user.id, title="t")
    db_session.add_all([
        ApiKey(user_id=user.id, name="k", prefix="sk-llmws-abcdef", key_hash="0" * 64),
        AuthSession(user_id=user.id, token_hash="1" * 64, expires_at=now + timedelta(days=1)),
        conversation,
    ])
    await db_session.flush()
    db_session.add(Message(conversation_id=conversation.id, role="user", content="hello"))
    await db_session.flush()

    await db_session.delete(user)
    await db_session.flush()
    db_session.expunge_all()
    for model in (ApiKey, AuthSession, Conversation, Message):
        assert (await db_session.execute(select(func.count()).select_from(model))).scalar_one() == 0
