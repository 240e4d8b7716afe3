"""Admin REST over the local engine: machine resources, the models on disk, switching and unloading."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from api.deps import admin_principal
from api.schemas.common import RequestBody
from api.services.errors import NotFound
from engine.host import ModelHost
from engine.resources import cpu_resources, gpu_resources

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(admin_principal)])


class SwitchRequest(RequestBody):
    model: str = Field(min_length=1, max_length=300, description="A name from GET /admin/engine/models.")


def _host(request: Request) -> ModelHost:
    return request.app.state.model_host


@router.get("/resources")
async def resources(request: Request) -> dict[str, Any]:
    host = _host(request)
    gpus, cpu = await asyncio.gather(asyncio.to_thread(gpu_resources), asyncio.to_thread(cpu_resources))
    engine = asdict(host.local.stats()) if host.local else None
    return {"gpus": gpus, "cpu": cpu, "engine": engine, "model": host.metadata()}


@router.get("/engine/models")
async def local_models(request: Request) -> dict[str, Any]:
    host = _host(request)
    models = await asyncio.to_thread(host.available)
    current = host.loaded.info.path if host.loaded else None
    return {"data": [{**asdict(model), "path": str(model.path), "model_dir": str(model.model_dir),
                      "loaded": model.path == current} for model in models]}


@router.post("/engine/switch")
async def switch(body: SwitchRequest, request: Request) -> dict[str, Any]:
    host = _host(request)
    models = await asyncio.to_thread(host.available)
    target = next((model for model in models if model.name == body.model), None)
    if target is None:
        raise NotFound(f"no local model named {body.model!r}", param="model")
    stages: list[dict[str, Any]] = []
    await host.switch(target, lambda stage, fraction: stages.append({"stage": stage, "progress": fraction}))
    return {"model": host.metadata(), "progress": stages}


@router.post("/engine/unload", status_code=204)
async def unload(request: Request) -> None:
    await _host(request).unload()
