"""User accounts: creation, roles, activation, passwords, and the first admin."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services import audit
from api.services.accounts import principal_cache
from api.services.accounts.account_rules import normalize_username, username_problem
from api.services.accounts.login_throttle import ThrottlePolicy, begin_registration
from api.services.accounts.passwords import check_password_policy, hash_password
from api.services.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from db.models import AuthSession, Role, User
from db.types import utcnow

log = logging.getLogger(__name__)

def check_username(username: str) -> str:
    problem = username_problem(username)
    if problem:
        raise InvalidInput(problem, param="username", code="invalid_username")
    return normalize_username(username)


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
        # Another request took the name or email between our check and this insert; the unit of work that
        # owns the session rolls back.
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
    if user.is_admin and user.is_active and loses_admin and len(await _lock_active_admins(session)) <= 1:
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
            raise Conflict("email already in use", param="email", code="email_taken") from None
        # Counted again inside the write: on SQLite the check above ran before this request held the write lock.
        if loses_admin and not await _lock_active_admins(session):
            raise Conflict("the last active admin cannot be demoted or disabled", code="last_admin")
        audit.record(session, "user.updated", actor_user_id=actor_user_id, subject=user.username,
                     target_type="user", target_id=user.id, ip=ip, detail=changes)
    return user


async def revoke_sessions(session: AsyncSession, user_id: int, *, except_session_id: int | None = None) -> None:
    statement = update(AuthSession).where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
    if except_session_id is not None:
        statement = statement.where(AuthSession.id != except_session_id)
    await session.execute(statement.values(revoked_at=utcnow()))
    principal_cache.mark_changed(session, user_id)  # a bulk update: the flush does not see these rows


async def _lock_active_admins(session: AsyncSession) -> Sequence[int]:
    """The active admins' ids, locked until commit (PostgreSQL), so two admins demoting each other at once
    cannot both succeed: the second one waits, then counts again. SQLite serialises writers by itself."""
    query = select(User.id).where(User.role == Role.ADMIN.value, User.is_active.is_(True)).with_for_update()
    return (await session.execute(query)).scalars().all()


async def register(
    session: AsyncSession, sessionmaker: async_sessionmaker[AsyncSession], username: str, password: str, *,
    open_registration: bool, policy: ThrottlePolicy, email: str | None = None, ip: str | None = None,
) -> User:
    """Self-service sign-up, allowed only while open registration is on; new accounts are plain users.

    Each attempt counts against the address's allowance of password hashes, as logins do."""
    if not open_registration:
        raise PermissionDenied("registration is closed; ask an admin for an account", code="registration_closed")
    await begin_registration(sessionmaker, policy, username, ip)
    return await create_user(session, username, password, email=email, ip=ip)


async def admin_update(
    session: AsyncSession, user_id: int, *, actor_user_id: int, role: Role | None = None,
    is_active: bool | None = None, email: str | None = None, password: str | None = None, ip: str | None = None,
) -> User:
    """An admin's change to an account: role, activation, email, and optionally a new password."""
    if password is not None:
        check_password_policy(password)  # before any change, so a bad password changes nothing
    user = await get_user(session, user_id)
    await update_user(session, user, role=role, is_active=is_active, email=email, actor_user_id=actor_user_id, ip=ip)
    if password is not None:
        await set_password(session, user, password, actor_user_id=actor_user_id, ip=ip)
    return user


async def bootstrap_admin(
    sessionmaker: async_sessionmaker[AsyncSession], username: str, password: str | None
) -> str | None:
    """Create the first admin when there are no users, in a transaction of its own.

    Returns the generated password when one was made.
    """
    generated = None if password else secrets.token_urlsafe(12)
    async with sessionmaker() as session:
        if await count_users(session) > 0:
            return None
        try:
            await create_user(session, username, password or generated or "", role=Role.ADMIN)
            await session.commit()
        except Conflict:
            # Another replica created the first user at the same moment.
            return None
    log.info("created the first admin user %r", normalize_username(username))
    return generated
