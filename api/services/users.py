"""User accounts: creation, roles, activation, passwords, and the first admin."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.services import audit
from api.services.errors import Conflict, InvalidInput, NotFound
from api.services.passwords import check_password_policy, hash_password
from db.models import AuthSession, Role, User
from db.types import utcnow

log = logging.getLogger(__name__)

USERNAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def normalize_username(username: str) -> str:
    """Usernames are compared case-insensitively: `Alice` and `alice` are one account."""
    return username.strip().lower()


def check_username(username: str) -> str:
    name = normalize_username(username)
    if not USERNAME_PATTERN.fullmatch(name):
        raise InvalidInput(
            "username must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit",
            param="username", code="invalid_username",
        )
    return name


async def create_user(
    session: AsyncSession,
    username: str,
    password: str,
    *,
    role: Role = Role.USER,
    email: str | None = None,
    actor_user_id: int | None = None,
    ip: str | None = None,
) -> User:
    name = check_username(username)
    check_password_policy(password)
    if await get_user_by_username(session, name) is not None:
        raise Conflict(f"user '{name}' already exists", param="username", code="username_taken")
    user = User(username=name, email=email, password_hash=await hash_password(password), role=role.value,
                is_active=True, password_changed_at=utcnow())
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        # Another request created the same name or email between our check and this insert.
        await session.rollback()
        raise Conflict("username or email already in use", param="username", code="username_taken") from None
    audit.record(session, "user.created", actor_user_id=actor_user_id, subject=name, target_type="user",
                 target_id=user.id, ip=ip, detail={"role": user.role})
    return user


async def get_user(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user with id {user_id}", param="user_id")
    return user


async def get_user_by_username(session: AsyncSession, username: str) -> User | None:
    result = await session.execute(select(User).where(User.username == normalize_username(username)))
    return result.scalar_one_or_none()


async def require_user_by_username(session: AsyncSession, username: str) -> User:
    user = await get_user_by_username(session, username)
    if user is None:
        raise NotFound(f"no user named '{normalize_username(username)}'", param="username")
    return user


async def list_users(session: AsyncSession, *, offset: int = 0, limit: int = 100) -> Sequence[User]:
    result = await session.execute(select(User).order_by(User.id).offset(offset).limit(limit))
    return result.scalars().all()


async def count_users(session: AsyncSession) -> int:
    return (await session.execute(select(func.count()).select_from(User))).scalar_one()


async def set_password(
    session: AsyncSession, user: User, password: str, *, actor_user_id: int | None = None,
    ip: str | None = None, keep_session_id: int | None = None,
) -> None:
    """Set a new password and end every login of the user except, optionally, the one making the change."""
    check_password_policy(password)
    user.password_hash = await hash_password(password)
    user.password_changed_at = utcnow()
    await revoke_sessions(session, user.id, except_session_id=keep_session_id)
    audit.record(session, "user.password_changed", actor_user_id=actor_user_id, subject=user.username,
                 target_type="user", target_id=user.id, ip=ip)


async def update_user(
    session: AsyncSession, user: User, *, role: Role | None = None, is_active: bool | None = None,
    email: str | None = None, actor_user_id: int | None = None, ip: str | None = None,
) -> User:
    changes: dict[str, object] = {}
    loses_admin = (role is not None and role != Role.ADMIN) or is_active is False
    if user.is_admin and user.is_active and loses_admin and await _active_admins(session) <= 1:
        raise Conflict("the last active admin cannot be demoted or disabled", code="last_admin")
    if role is not None and role.value != user.role:
        changes["role"] = role.value
        user.role = role.value
    if is_active is not None and is_active != user.is_active:
        changes["is_active"] = is_active
        user.is_active = is_active
        if not is_active:
            await revoke_sessions(session, user.id)
    if email is not None and email != user.email:
        changes["email"] = email
        user.email = email
    if changes:
        try:
            await session.flush()
        except IntegrityError:
            await session.rollback()
            raise Conflict("email already in use", param="email", code="email_taken") from None
        audit.record(session, "user.updated", actor_user_id=actor_user_id, subject=user.username,
                     target_type="user", target_id=user.id, ip=ip, detail=changes)
    return user


async def revoke_sessions(session: AsyncSession, user_id: int, *, except_session_id: int | None = None) -> None:
    statement = update(AuthSession).where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
    if except_session_id is not None:
        statement = statement.where(AuthSession.id != except_session_id)
    await session.execute(statement.values(revoked_at=utcnow()))


async def _active_admins(session: AsyncSession) -> int:
    query = select(func.count()).select_from(User).where(User.role == Role.ADMIN.value, User.is_active.is_(True))
    return (await session.execute(query)).scalar_one()


async def bootstrap_admin(session: AsyncSession, username: str, password: str | None) -> str | None:
    """Create the first admin when there are no users. Returns the generated password when one was made."""
    if await count_users(session) > 0:
        return None
    generated = None if password else secrets.token_urlsafe(12)
    try:
        await create_user(session, username, password or generated or "", role=Role.ADMIN)
        await session.commit()
    except Conflict:
        # Another replica created the first user at the same moment.
        return None
    log.info("created the first admin user %r", normalize_username(username))
    return generated
