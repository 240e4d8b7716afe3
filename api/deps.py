"""FastAPI dependencies as ``Annotated`` aliases: the database session (one unit of work per request), the caller,
and the admin check."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.lifespan import services_of
from api.services.accounts import auth
from api.services.accounts.principal import Principal
from api.services.errors import AuthenticationFailed, PermissionDenied, ServiceError
from api.settings import Settings


async def _db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the route returns, rolled back when anything raises."""
    async with services_of(request.app).sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


# scope="function": the commit happens before the response is sent, so a client that sees 200 sees the data.
SessionDep = Annotated[AsyncSession, Depends(_db_session, scope="function")]


def _sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    """For the few writes that must outlive a failing request (a failed password attempt)."""
    return services_of(request.app).sessionmaker


SessionmakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(_sessionmaker)]


def _settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(_settings)]


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise AuthenticationFailed("missing credentials: send 'Authorization: Bearer <token or API key>'",
                                   code="missing_credentials")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("the Authorization header must be 'Bearer <token or API key>'",
                                   code="invalid_authorization_header")
    return token.strip()


async def current_principal(request: Request, session: SessionDep) -> Principal:
    principal = await auth.current_principal(session, services_of(request.app).principal_cache, bearer_token(request))
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def admin_principal(principal: CurrentPrincipal) -> Principal:
    if not principal.user.is_admin:
        raise PermissionDenied("this needs the admin role", code="admin_required")
    return principal


AdminPrincipal = Annotated[Principal, Depends(admin_principal)]


# How long an open probe waits to learn whether its caller is an admin: /readyz must answer fast when the
# database is slow or gone, so a lookup that takes longer just counts as anonymous.
ADMIN_PROBE_TIMEOUT_S = 2.0


async def caller_is_admin(request: Request) -> bool:
    """Whether an open route's caller sent an admin's credential. Never refuses: a missing, malformed, invalid or
    non-admin credential (or a database that cannot be asked) just means "not an admin"."""
    try:
        token = bearer_token(request)
    except AuthenticationFailed:
        return False

    async def lookup() -> Principal:
        async with services_of(request.app).sessionmaker() as session:
            principal = await auth.current_principal(session, services_of(request.app).principal_cache, token)
            await session.commit()  # the credential's last-used time, as on any other route
            return principal

    try:
        principal = await asyncio.wait_for(lookup(), ADMIN_PROBE_TIMEOUT_S)
    except (ServiceError, TimeoutError, OSError, SQLAlchemyError):
        return False
    request.state.principal = principal
    return principal.user.is_admin


CallerIsAdmin = Annotated[bool, Depends(caller_is_admin)]


def _require_login_session(principal: Principal) -> Principal:
    # Only a login session makes or changes credentials: a request signed with an API key (perhaps limited,
    # perhaps expiring tomorrow) could otherwise mint a key with more rights than its own, which would outlive it.
    if principal.credential != "session":
        raise PermissionDenied("this needs a login session (POST /auth/login): an API key cannot create or change "
                               "credentials", code="login_session_required")
    return principal


async def login_session_principal(principal: CurrentPrincipal) -> Principal:
    return _require_login_session(principal)


async def admin_session_principal(principal: AdminPrincipal) -> Principal:
    return _require_login_session(principal)


LoginSessionPrincipal = Annotated[Principal, Depends(login_session_principal)]
AdminSessionPrincipal = Annotated[Principal, Depends(admin_session_principal)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


ClientIP = Annotated[str | None, Depends(client_ip)]
