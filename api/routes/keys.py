"""The caller's own API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.deps import ClientIP, CurrentPrincipal, LoginSessionPrincipal, SessionDep, current_principal
from api.schemas.common import ListOut
from api.schemas.keys import ApiKeyCreate, ApiKeyCreated, ApiKeyOut
from api.services.accounts import api_keys

router = APIRouter(prefix="/v1/keys", tags=["keys"], dependencies=[Depends(current_principal)])


@router.get("")
async def list_own_keys(
    principal: CurrentPrincipal, session: SessionDep,
    include_revoked: bool = False,
    offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ListOut[ApiKeyOut]:
    rows = await api_keys.list_keys(session, user_id=principal.user.id, include_revoked=include_revoked,
                                    offset=offset, limit=limit)
    return ListOut[ApiKeyOut](data=[ApiKeyOut.model_validate(row) for row in rows], offset=offset, limit=limit)


@router.post("", status_code=201)
async def create_key(body: ApiKeyCreate, principal: LoginSessionPrincipal, session: SessionDep,
                     ip: ClientIP) -> ApiKeyCreated:
    created = await api_keys.create_key(session, principal.user, body.name, expires_at=body.expires_at, ip=ip)
    return ApiKeyCreated.model_validate({**ApiKeyOut.model_validate(created.row).model_dump(), "key": created.key})


@router.delete("/{key_id}")
async def revoke_key(key_id: int, principal: CurrentPrincipal, session: SessionDep, ip: ClientIP) -> ApiKeyOut:
    row = await api_keys.revoke_key(session, key_id, principal.user, owner_id=principal.user.id, ip=ip)
    return ApiKeyOut.model_validate(row)
