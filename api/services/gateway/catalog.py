"""Admin changes to the gateway's catalog: providers (their API keys sealed) and model aliases with their
deployments. Every change is audited and reloads this replica's gateway at once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas.gateway import ModelIn, ProviderIn, ProviderPatch, defaults_dict
from api.services import audit
from api.services.errors import Conflict, InvalidInput, NotFound
from api.services.gateway.gateway import Gateway
from db.models import ModelDeployment, ModelEntry, Provider


def provider_out(row: Provider, gateway: Gateway) -> dict[str, Any]:
    state = gateway.providers.get(row.id)
    return {"id": row.id, "name": row.name, "kind": row.kind, "base_url": row.base_url,
            "has_api_key": row.api_key_encrypted is not None, "timeout_s": row.timeout_s, "is_active": row.is_active,
            "runner_id": row.runner_id,
            "health": state.public() if state else {"status": row.health_status, "detail": row.health_detail,
                                                    "checked_at": None, "models": row.upstream_models or []}}


async def list_providers(session: AsyncSession) -> list[Provider]:
    return list((await session.scalars(select(Provider).order_by(Provider.id))).all())


async def get_provider(session: AsyncSession, provider_id: int) -> Provider:
    row = await session.get(Provider, provider_id)
    if row is None:
        raise NotFound("no such provider", param="provider_id")
    return row


async def create_provider(session: AsyncSession, gateway: Gateway, body: ProviderIn, actor: int,
                          ip: str | None, runner_id: str | None = None) -> Provider:
    row = Provider(name=body.name, kind=body.kind, base_url=str(body.base_url).rstrip("/"), timeout_s=body.timeout_s,
                   is_active=body.is_active, runner_id=runner_id)
    session.add(row)
    await _flush(session, f"a provider named {body.name!r} exists already")
    if body.api_key:
        row.api_key_encrypted = gateway.seal_api_key(row.id, body.api_key)
    audit.record(session, "provider.created", actor_user_id=actor, subject=row.name, target_type="provider",
                 target_id=row.id, ip=ip, detail={"base_url": row.base_url, "kind": row.kind})
    await session.commit()
    await gateway.reload()
    return row


async def update_provider(session: AsyncSession, gateway: Gateway, provider_id: int, body: ProviderPatch,
                          actor: int, ip: str | None) -> Provider:
    row = await get_provider(session, provider_id)
    changes = body.model_dump(exclude_unset=True)
    moving = changes.get("base_url") is not None and str(body.base_url).rstrip("/") != row.base_url
    if moving and row.api_key_encrypted is not None and "api_key" not in changes:
        # The stored key was given for the old host; sending it to another is for the admin to decide, each time.
        raise InvalidInput("a new base_url needs the API key again: give api_key (null to send none)",
                           param="api_key", code="api_key_required")
    for name in ("name", "kind", "timeout_s", "is_active"):
        if changes.get(name) is not None:
            setattr(row, name, changes[name])
    if changes.get("base_url") is not None:
        row.base_url = str(body.base_url).rstrip("/")
    if "api_key" in changes:
        row.api_key_encrypted = gateway.seal_api_key(row.id, body.api_key) if body.api_key else None
    await _flush(session, f"a provider named {row.name!r} exists already")
    audit.record(session, "provider.updated", actor_user_id=actor, subject=row.name, target_type="provider",
                 target_id=row.id, ip=ip, detail={"fields": sorted(k for k in changes if k != "api_key")
                                                  + (["api_key"] if "api_key" in changes else [])})
    await session.commit()
    await gateway.reload()
    return row


async def delete_provider(session: AsyncSession, gateway: Gateway, provider_id: int, actor: int,
                          ip: str | None) -> None:
    row = await get_provider(session, provider_id)
    audit.record(session, "provider.deleted", actor_user_id=actor, subject=row.name, target_type="provider",
                 target_id=row.id, ip=ip)
    await session.delete(row)
    await session.commit()
    await gateway.reload()


def model_out(row: ModelEntry, deployments: list[ModelDeployment]) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "description": row.description, "context_window": row.context_window,
            "defaults": row.defaults, "allowed_roles": row.allowed_roles, "allowed_users": row.allowed_users,
            "is_active": row.is_active,
            "deployments": [{"id": d.id, "provider_id": d.provider_id, "upstream_model": d.upstream_model,
                             "context_window": d.context_window, "defaults": d.defaults, "priority": d.priority,
                             "is_active": d.is_active} for d in deployments]}


async def list_models(session: AsyncSession) -> list[dict[str, Any]]:
    rows = (await session.scalars(select(ModelEntry).order_by(ModelEntry.name))).all()
    deployments = (await session.scalars(select(ModelDeployment).order_by(ModelDeployment.priority,
                                                                          ModelDeployment.id))).all()
    return [model_out(row, [d for d in deployments if d.model_id == row.id]) for row in rows]


async def get_model(session: AsyncSession, model_id: int) -> dict[str, Any]:
    row = await session.get(ModelEntry, model_id)
    if row is None:
        raise NotFound("no such model", param="model_id")
    deployments = (await session.scalars(select(ModelDeployment).where(ModelDeployment.model_id == row.id)
                                         .order_by(ModelDeployment.priority, ModelDeployment.id))).all()
    return model_out(row, list(deployments))


async def save_model(session: AsyncSession, gateway: Gateway, body: ModelIn, actor: int, ip: str | None,
                     model_id: int | None = None) -> dict[str, Any]:
    """Create an alias, or replace one (its deployments included) when ``model_id`` is given."""
    for deployment in body.deployments:
        if deployment.provider_id is not None:
            if deployment.upstream_model is None:
                raise InvalidInput("a provider deployment needs upstream_model", param="deployments")
            if await session.get(Provider, deployment.provider_id) is None:
                raise InvalidInput(f"no provider {deployment.provider_id}", param="deployments")
    if model_id is None:
        row = ModelEntry(name=body.name)
        session.add(row)
    else:
        found = await session.get(ModelEntry, model_id)
        if found is None:
            raise NotFound("no such model", param="model_id")
        row = found
        await session.execute(delete(ModelDeployment).where(ModelDeployment.model_id == row.id))
    row.name, row.description, row.context_window = body.name, body.description, body.context_window
    row.defaults, row.is_active = defaults_dict(body.defaults), body.is_active
    row.allowed_roles, row.allowed_users = body.allowed_roles, body.allowed_users
    await _flush(session, f"a model named {body.name!r} exists already")
    for deployment in body.deployments:
        session.add(ModelDeployment(model_id=row.id, provider_id=deployment.provider_id,
                                    upstream_model=deployment.upstream_model,
                                    context_window=deployment.context_window,
                                    defaults=defaults_dict(deployment.defaults), priority=deployment.priority,
                                    is_active=deployment.is_active))
    audit.record(session, "model.created" if model_id is None else "model.updated", actor_user_id=actor,
                 subject=row.name, target_type="model", target_id=row.id, ip=ip,
                 detail={"deployments": len(body.deployments)})
    await session.commit()
    await gateway.reload()
    return await get_model(session, row.id)


async def delete_model(session: AsyncSession, gateway: Gateway, model_id: int, actor: int, ip: str | None) -> None:
    row = await session.get(ModelEntry, model_id)
    if row is None:
        raise NotFound("no such model", param="model_id")
    audit.record(session, "model.deleted", actor_user_id=actor, subject=row.name, target_type="model",
                 target_id=row.id, ip=ip)
    await session.delete(row)
    await session.commit()
    await gateway.reload()


async def _flush(session: AsyncSession, conflict: str) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict(conflict, param="name") from exc
