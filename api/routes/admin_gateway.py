"""Admin REST for the gateway: providers (with a connection test) and model aliases with their deployments."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from api.deps import AdminPrincipal, ClientIP, SessionDep, admin_principal
from api.lifespan import services_of
from api.schemas.gateway import ModelIn, ProviderIn, ProviderPatch
from api.services.gateway import catalog
from api.services.gateway.gateway import Gateway

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(admin_principal)])


def _gateway(request: Request) -> Gateway:
    return services_of(request.app).gateway


@router.get("/providers")
async def list_providers(request: Request, session: SessionDep) -> dict[str, Any]:
    rows = await catalog.list_providers(session)
    return {"data": [catalog.provider_out(row, _gateway(request)) for row in rows]}


@router.post("/providers", status_code=201)
async def create_provider(body: ProviderIn, request: Request, admin: AdminPrincipal, session: SessionDep,
                          ip: ClientIP) -> dict[str, Any]:
    row = await catalog.create_provider(session, _gateway(request), body, admin.user.id, ip)
    return catalog.provider_out(row, _gateway(request))


@router.get("/providers/{provider_id}")
async def get_provider(provider_id: int, request: Request, session: SessionDep) -> dict[str, Any]:
    return catalog.provider_out(await catalog.get_provider(session, provider_id), _gateway(request))


@router.patch("/providers/{provider_id}")
async def update_provider(provider_id: int, body: ProviderPatch, request: Request, admin: AdminPrincipal,
                          session: SessionDep, ip: ClientIP) -> dict[str, Any]:
    row = await catalog.update_provider(session, _gateway(request), provider_id, body, admin.user.id, ip)
    return catalog.provider_out(row, _gateway(request))


@router.delete("/providers/{provider_id}", status_code=204)
async def delete_provider(provider_id: int, request: Request, admin: AdminPrincipal, session: SessionDep,
                          ip: ClientIP) -> None:
    await catalog.delete_provider(session, _gateway(request), provider_id, admin.user.id, ip)


@router.post("/providers/{provider_id}/test")
async def test_provider(provider_id: int, request: Request, session: SessionDep) -> dict[str, Any]:
    """Ask the upstream for its models now; the answer is the provider's health from here on."""
    await catalog.get_provider(session, provider_id)
    gateway = _gateway(request)
    state = gateway.providers.get(provider_id)
    if state is None:
        await gateway.reload()
        state = gateway.providers[provider_id]
    checked = await gateway.check(state)
    return {"ok": bool(checked.healthy), **checked.public()}


@router.get("/models")
async def list_models(session: SessionDep) -> dict[str, Any]:
    return {"data": await catalog.list_models(session)}


@router.post("/models", status_code=201)
async def create_model(body: ModelIn, request: Request, admin: AdminPrincipal, session: SessionDep,
                       ip: ClientIP) -> dict[str, Any]:
    return await catalog.save_model(session, _gateway(request), body, admin.user.id, ip)


@router.get("/models/{model_id}")
async def get_model(model_id: int, session: SessionDep) -> dict[str, Any]:
    return await catalog.get_model(session, model_id)


@router.put("/models/{model_id}")
async def replace_model(model_id: int, body: ModelIn, request: Request, admin: AdminPrincipal, session: SessionDep,
                        ip: ClientIP) -> dict[str, Any]:
    return await catalog.save_model(session, _gateway(request), body, admin.user.id, ip, model_id=model_id)


@router.delete("/models/{model_id}", status_code=204)
async def delete_model(model_id: int, request: Request, admin: AdminPrincipal, session: SessionDep,
                       ip: ClientIP) -> None:
    await catalog.delete_model(session, _gateway(request), model_id, admin.user.id, ip)
