"""The local engine as the admin sees it, and the admin's actions on its models, by name: the machine's resources
with the engine's, and switching the served model or deleting one from disk, each audited
(`local_model.switched`, `local_model.deleted`). The admin REST API and the WebSocket both come here: they only
map their own fields onto these calls."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services import audit
from api.services.errors import NotFound
from engine import registry
from engine.host import ModelHost, Progress
from engine.loader import LoadedModel
from engine.registry import ModelInfo
from engine.resources import cpu_resources, gpu_resources


async def resources(host: ModelHost) -> dict[str, Any]:
    """The GPUs and the CPU (read off the event loop), the engine's load and the served model's metadata."""
    gpus, cpu = await asyncio.gather(asyncio.to_thread(gpu_resources), asyncio.to_thread(cpu_resources))
    return {"gpus": gpus, "cpu": cpu, "engine": asdict(host.local.stats()) if host.local else None,
            "model": host.metadata()}


async def find(host: ModelHost, name: str, *, param: str = "model", paths: bool = False) -> ModelInfo:
    """The model the scan lists under ``name``: only such names can be switched to or deleted. With ``paths``, a
    path to one of them as the seed's clients send it (``models/<name>``) names it too (``registry.find``)."""
    models = await asyncio.to_thread(host.available)
    if paths:
        target = registry.find(models, name)
    else:
        target = next((model for model in models if model.name == name), None)
    if target is None:
        where = f"{name!r} in the model folders" if paths else f"named {name!r}"
        raise NotFound(f"no local model {where}", param=param, code="model_not_found")
    return target


async def switch(host: ModelHost, sessions: async_sessionmaker[AsyncSession], target: str | ModelInfo, *,
                 actor_user_id: int | None, ip: str | None = None, progress: Progress | None = None,
                 param: str = "model") -> LoadedModel:
    """Serve ``target``: a name the scan lists, or a model ``find`` returned."""
    if isinstance(target, str):
        target = await find(host, target, param=param)
    previous = host.loaded.info.name if host.loaded else None
    loaded = await host.switch(target, progress)
    async with sessions.begin() as session:
        audit.record(session, "local_model.switched", actor_user_id=actor_user_id, subject=target.name,
                     target_type="local_model", target_id=target.name, ip=ip,
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
