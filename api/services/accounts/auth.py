"""Logging in and out, and turning a bearer credential (session token or API key) into a principal."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services import audit
from api.services.accounts.account_rules import normalize_username
from api.services.accounts.credentials import credential_hash, is_api_key, new_session_token
from api.services.accounts.login_throttle import ThrottlePolicy, begin_attempt, settle_attempt
from api.services.accounts.passwords import hash_password, password_context, verify_password
from api.services.accounts.principal import Principal
from api.services.accounts.principal_cache import PrincipalCache
from api.services.accounts.users import get_user_by_username, set_password
from api.services.errors import AuthenticationFailed, InvalidInput, PermissionDenied
from db.models import ApiKey, AuthSession, User
from db.types import utcnow

log = logging.getLogger(__name__)

LOGIN_OK = "auth.login"
LOGIN_REFUSED = "auth.login_refused"
PASSWORD_CHECKED = "auth.password_checked"  # noqa: S105 (an action name)
# Recording every use would turn each request into a write; a minute's precision is plenty for "last used".
LAST_USED_PRECISION = timedelta(seconds=60)


@dataclass(frozen=True)
class LoginResult:
    token: str
    auth_session: AuthSession


async def login(
    session: AsyncSession, sessionmaker: async_sessionmaker[AsyncSession], username: str, password: str, *,
    policy: ThrottlePolicy, lifetime: timedelta, ip: str | None = None, user_agent: str | None = None,
) -> LoginResult:
    name = normalize_username(username)
    attempt_id = await begin_attempt(sessionmaker, policy, name, ip)
    user = await get_user_by_username(session, name)
    # Verified even for unknown users (against a dummy hash), so timing does not reveal which names exist.
    if not await verify_password(password, user.password_hash if user else None) or user is None:
        log.warning("failed login for user %r from %s", name, ip)
        raise AuthenticationFailed("invalid username or password")
    if not user.is_active:
        # Only someone who knows the password learns that the account is disabled; they are told so.
        async with sessionmaker() as own:
            await settle_attempt(own, attempt_id, LOGIN_REFUSED, actor_user_id=user.id)
            await own.commit()
        raise PermissionDenied("this account is disabled", code="account_disabled")

    if password_context.needs_update(user.password_hash):
        user.password_hash = await hash_password(password)
    token = new_session_token()
    now = utcnow()
    auth_session = AuthSession(user=user, token_hash=credential_hash(token), expires_at=now + lifetime,
                               ip=ip, user_agent=(user_agent or "")[:255] or None, last_used_at=now)
    session.add(auth_session)
    user.last_login_at = now
    await session.flush()
    await settle_attempt(session, attempt_id, LOGIN_OK, actor_user_id=user.id, target_type="auth_session",
                         target_id=auth_session.id)
    return LoginResult(token=token, auth_session=auth_session)


async def authenticate(session: AsyncSession, token: str) -> Principal:
    """The principal behind a bearer credential; raises when it is unknown, revoked, expired or disabled."""
    now = utcnow()
    if is_api_key(token):
        key = (await session.execute(select(ApiKey).where(ApiKey.key_hash == credential_hash(token)))).scalar()
        if key is None or key.revoked_at is not None:
            raise AuthenticationFailed("invalid or revoked API key", code="invalid_api_key")
        if key.expires_at is not None and key.expires_at <= now:
            raise AuthenticationFailed("this API key has expired", code="expired_api_key")
        _check_active(key.user)
        if key.last_used_at is None or now - key.last_used_at >= LAST_USED_PRECISION:
            key.last_used_at = now
        return Principal(user=key.user, api_key_id=key.id, api_key=key)

    query = select(AuthSession).where(AuthSession.token_hash == credential_hash(token))
    auth_session = (await session.execute(query)).scalar()
    if auth_session is None or auth_session.revoked_at is not None:
        raise AuthenticationFailed("invalid or revoked token", code="invalid_token")
    if auth_session.expires_at <= now:
        raise AuthenticationFailed("this token has expired; log in again", code="token_expired")
    _check_active(auth_session.user)
    if auth_session.last_used_at is None or now - auth_session.last_used_at >= LAST_USED_PRECISION:
        auth_session.last_used_at = now
    return Principal(user=auth_session.user, session_id=auth_session.id)


async def current_principal(session: AsyncSession, cache: PrincipalCache, token: str) -> Principal:
    """``authenticate`` through this replica's cache of recent checks: how an HTTP request and every WebSocket
    message are judged, so a revoke, a disable or a new role reaches both alike (at once on this replica, within
    the cache's TTL on another)."""
    hashed = credential_hash(token)
    principal = cache.get(hashed)
    if principal is None:
        principal = await authenticate(session, token)
        cache.put(hashed, principal, _credential_expiry(principal))
    return principal


def _credential_expiry(principal: Principal) -> datetime | None:
    if principal.api_key is not None:
        return principal.api_key.expires_at
    return None  # a login session's expiry is days away; the cache entry lasts seconds


def _check_active(user: User) -> None:
    if not user.is_active:
        raise PermissionDenied("this account is disabled", code="account_disabled")


async def logout(session: AsyncSession, principal: Principal, *, ip: str | None = None) -> None:
    if principal.session_id is None:
        raise InvalidInput("logout ends a login session; revoke API keys with DELETE /v1/keys/{id}",
                           code="not_a_session")
    auth_session = await session.get(AuthSession, principal.session_id)
    if auth_session is not None and auth_session.revoked_at is None:
        auth_session.revoked_at = utcnow()
    audit.record(session, "auth.logout", actor_user_id=principal.user.id, subject=principal.user.username,
                 target_type="auth_session", target_id=principal.session_id, ip=ip)


async def change_own_password(
    session: AsyncSession, sessionmaker: async_sessionmaker[AsyncSession], principal: Principal,
    current_password: str, new_password: str, *, policy: ThrottlePolicy, ip: str | None = None,
) -> None:
    """Change the caller's password; every other login of theirs ends, the current one stays.

    The current password is checked under the same throttle as logins, so a stolen token or key is no free
    oracle for guessing it.
    """
    # This session's own row: the principal's may be a cached copy that no session writes back.
    user = await session.get(User, principal.user.id, populate_existing=True)
    if user is None:
        raise AuthenticationFailed("this account no longer exists", code="invalid_token")
    attempt_id = await begin_attempt(sessionmaker, policy, user.username, ip, actor_user_id=user.id)
    if not await verify_password(current_password, user.password_hash):
        raise InvalidInput("the current password is wrong", param="current_password", code="wrong_password")
    await settle_attempt(session, attempt_id, PASSWORD_CHECKED)
    await set_password(session, user, new_password, actor_user_id=user.id, ip=ip,
                       keep_session_id=principal.session_id)
