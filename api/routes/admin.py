"""Admin REST over users, everyone's API keys, the audit log and the dashboard's overview. The whole router needs
the admin role."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import AdminPrincipal, AdminSessionPrincipal, ClientIP, SessionDep, admin_principal
from api.schemas.admin import AdminUserCreate, AdminUserUpdate, AuditOut, LimitsIn, LimitsOut
from api.schemas.auth import UserOut
from api.schemas.common import ListOut
from api.schemas.keys import ApiKeyOut
from api.schemas.usage import OverviewOut
from api.services import audit, overview
from api.services.accounts import api_keys
from api.services.accounts import users as user_service
from api.services.accounts.principal import Principal
from db.models import ApiKey, User

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(admin_principal)])

Offset = Annotated[int, Query(ge=0)]
Limit = Annotated[int, Query(ge=1, le=500)]
Hours = Annotated[int, Query(ge=1, le=720, description="How many hours the hourly series covers.")]


@router.get("/overview")
async def get_overview(session: SessionDep, hours: Hours = 24) -> OverviewOut:
    return OverviewOut.model_validate(await overview.overview(session, hours))


@router.get("/users")
async def list_users(session: SessionDep, offset: Offset = 0, limit: Limit = 100) -> ListOut[UserOut]:
    rows = await user_service.list_users(session, offset=offset, limit=limit)
    return ListOut[UserOut](data=[UserOut.model_validate(row) for row in rows], offset=offset, limit=limit)


@router.post("/users", status_code=201)
async def create_user(body: AdminUserCreate, admin: AdminSessionPrincipal, session: SessionDep,
                      ip: ClientIP) -> UserOut:
    user = await user_service.create_user(session, body.username, body.password, role=body.role,
                                          email=body.email, actor_user_id=admin.user.id, ip=ip)
    return UserOut.model_validate(user)


@router.get("/users/{user_id}")
async def get_user(user_id: int, session: SessionDep) -> UserOut:
    return UserOut.model_validate(await user_service.get_user(session, user_id))


@router.patch("/users/{user_id}")
async def update_user(user_id: int, body: AdminUserUpdate, admin: AdminSessionPrincipal, session: SessionDep,
                      ip: ClientIP) -> UserOut:
    user = await user_service.admin_update(session, user_id, role=body.role, is_active=body.is_active,
                                           email=body.email, password=body.password, actor_user_id=admin.user.id,
                                           ip=ip)
    return UserOut.model_validate(user)


@router.put("/users/{user_id}/limits")
async def set_user_limits(user_id: int, body: LimitsIn, admin: AdminSessionPrincipal, session: SessionDep,
                          ip: ClientIP) -> LimitsOut:
    user = await user_service.get_user(session, user_id)
    _apply_limits(session, user, body, admin, ip, target_type="user", subject=user.username)
    return LimitsOut.model_validate(user)


@router.put("/keys/{key_id}/limits")
async def set_key_limits(key_id: int, body: LimitsIn, admin: AdminSessionPrincipal, session: SessionDep,
                         ip: ClientIP) -> LimitsOut:
    key = await api_keys.get_key(session, key_id)
    _apply_limits(session, key, body, admin, ip, target_type="api_key", subject=key.user.username)
    return LimitsOut.model_validate(key)


def _apply_limits(session: AsyncSession, row: User | ApiKey, body: LimitsIn, admin: Principal, ip: str | None, *,
                  target_type: str, subject: str) -> None:
    limits = body.model_dump()
    for name, value in limits.items():
        setattr(row, name, value)
    audit.record(session, f"{target_type}.limits_set", actor_user_id=admin.user.id, subject=subject,
                 target_type=target_type, target_id=row.id, ip=ip, detail=limits)


@router.get("/keys")
async def list_keys(session: SessionDep, user_id: int | None = None, include_revoked: bool = True,
                    offset: Offset = 0, limit: Limit = 100) -> ListOut[ApiKeyOut]:
    rows = await api_keys.list_keys(session, user_id=user_id, include_revoked=include_revoked, offset=offset,
                                    limit=limit)
    return ListOut[ApiKeyOut](data=[ApiKeyOut.model_validate(row) for row in rows], offset=offset, limit=limit)


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: int, admin: AdminPrincipal, session: SessionDep, ip: ClientIP) -> ApiKeyOut:
    return ApiKeyOut.model_validate(await api_keys.revoke_key(session, key_id, admin.user, ip=ip))


@router.get("/audit")
async def list_audit(session: SessionDep, action: str | None = None, offset: Offset = 0,
                     limit: Limit = 100) -> ListOut[AuditOut]:
    rows = await audit.list_entries(session, action=action, offset=offset, limit=limit)
    return ListOut[AuditOut](data=[AuditOut.model_validate(row) for row in rows], offset=offset, limit=limit)
