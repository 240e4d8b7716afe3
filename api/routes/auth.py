"""Login, logout, registration, the caller's own account, password and preferences."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from api.deps import (
    ClientIP,
    CurrentPrincipal,
    LoginSessionPrincipal,
    SessionDep,
    SessionmakerDep,
    SettingsDep,
    current_principal,
)
from api.schemas.auth import (
    LoginRequest,
    MeOut,
    PasswordChangeRequest,
    Preferences,
    RegisterRequest,
    TokenOut,
    UserOut,
)
from api.services.accounts import auth as auth_service
from api.services.accounts import preferences as preference_service
from api.services.accounts import users as user_service
from api.services.accounts.login_throttle import ThrottlePolicy

public_router = APIRouter(prefix="/auth", tags=["auth"])
router = APIRouter(prefix="/auth", tags=["auth"], dependencies=[Depends(current_principal)])


@public_router.post("/login")
async def login(body: LoginRequest, request: Request, session: SessionDep, sessionmaker: SessionmakerDep,
                settings: SettingsDep, ip: ClientIP) -> TokenOut:
    result = await auth_service.login(session, sessionmaker, body.username, body.password,
                                      policy=ThrottlePolicy.from_settings(settings), lifetime=settings.token_lifetime,
                                      ip=ip, user_agent=request.headers.get("user-agent"))
    return TokenOut(access_token=result.token, expires_at=result.auth_session.expires_at,
                    user=UserOut.model_validate(result.auth_session.user))


@public_router.post("/register", status_code=201)
async def register(body: RegisterRequest, session: SessionDep, sessionmaker: SessionmakerDep, settings: SettingsDep,
                   ip: ClientIP) -> UserOut:
    user = await user_service.register(session, sessionmaker, body.username, body.password, email=body.email, ip=ip,
                                       open_registration=settings.open_registration,
                                       policy=ThrottlePolicy.from_settings(settings))
    return UserOut.model_validate(user)


@router.get("/me")
async def me(principal: CurrentPrincipal) -> MeOut:
    return MeOut.model_validate({**UserOut.model_validate(principal.user).model_dump(),
                                 "credential": principal.credential})


@router.get("/me/preferences")
async def get_preferences(principal: CurrentPrincipal, session: SessionDep) -> Preferences:
    return Preferences.model_validate(await preference_service.get_preferences(session, principal))


@router.put("/me/preferences")
async def set_preferences(body: Preferences, principal: CurrentPrincipal, session: SessionDep) -> Preferences:
    return Preferences.model_validate(await preference_service.set_preferences(session, principal,
                                                                               body.model_dump()))


@router.post("/logout", status_code=204)
async def logout(principal: CurrentPrincipal, session: SessionDep, ip: ClientIP) -> None:
    await auth_service.logout(session, principal, ip=ip)


@router.post("/password", status_code=204)
async def change_password(body: PasswordChangeRequest, principal: LoginSessionPrincipal, session: SessionDep,
                          sessionmaker: SessionmakerDep, settings: SettingsDep, ip: ClientIP) -> None:
    await auth_service.change_own_password(session, sessionmaker, principal, body.current_password,
                                           body.new_password, policy=ThrottlePolicy.from_settings(settings), ip=ip)
