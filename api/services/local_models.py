"""Admin actions on the local models, by name: switching the served model and deleting one from disk, each
audited (`local_model.switched`, `local_model.deleted`). The admin REST API and the WebSocket both come
here."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services import audit
from api.services.errors import NotFound
from engine.host import ModelHost, Progress
from engine.loader import LoadedModel
from engine.registry import ModelInfo


async def find(host: ModelHost, name: str, *, param: str = "model") -> ModelInfo:
    """The model the scan lists under ``name``: only such names can be switched to or deleted."""
    target = next((model for model in await asyncio.to_thread(host.available) if model.name == name), None)
    if target is None:
        raise NotFound(f"no local model named {name!r}", param=param, code="model_not_found")
    return target


async def switch(host: ModelHost, sessions: async_sessionmaker[AsyncSession], name: str, *,
                 actor_user_id: int | None, ip: str | None = None, progress: Progress | None = None,
                 param: str = "model") -> LoadedModel:
    target = await find(host, name, param=param)
    previous = host.loaded.info.name if host.loaded else None
    loaded = await host.switch(target, progress)
    async with sessions.begin() as session:
        audit.record(session, "local_model.switched", actor_user_id=actor_user_id, subject=name,
                     target_type="local_model", target_id=name, ip=ip,
                     detail={"from": previous, "path": str(target.path)})
    return loaded


async def delete(host: ModelHost, sessions: async_sessionmaker[AsyncSession], name: str, *,
                 actor_user_id: int | None, ip: str | None = None, param: str = "model") -> Path:
    """Delete the model (and its converted copy) from disk; the entry removed from the model folder."""
    removed = await host.delete(await find(host, name, param=param))
    async with sessions.begin() as session:
        audit.record(session, "local_model.deleted", actor_user_id=actor_user_id, subject=name,
                     target_type="local_model", target_id=name, ip=ip, detail={"path": str(removed)})
    return removed
