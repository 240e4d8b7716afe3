"""Admin REST over the local engine: machine resources, the models on disk (switching, deleting), unloading,
downloads."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from api.deps import admin_principal, client_ip
from api.lifespan import services_of
from api.schemas.common import RequestBody
from api.services.accounts.principal import Principal
from api.services.errors import NotFound
from api.services.models import local_models as model_actions
from api.services.models.downloads import MAX_NAME_CHARS, MAX_REVISION_CHARS, MAX_SOURCE_CHARS, DownloadJobs
from engine.host import ModelHost

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(admin_principal)])


class SwitchRequest(RequestBody):
    model: str = Field(min_length=1, max_length=300, description="A name from GET /admin/engine/models.")


class DownloadRequest(RequestBody):
    source: str = Field(min_length=1, max_length=MAX_SOURCE_CHARS,
                        description="A Hugging Face repo id (`owner/name`) or a git URL (https, http or file).")
    name: str | None = Field(None, min_length=1, max_length=MAX_NAME_CHARS,
                             description="Folder name under the download folder; default the repo's name.")
    revision: str | None = Field(None, min_length=1, max_length=MAX_REVISION_CHARS,
                                 description="Branch, tag or commit.")


def _host(request: Request) -> ModelHost:
    return services_of(request.app).model_host


@router.get("/resources")
async def resources(request: Request) -> dict[str, Any]:
    return await model_actions.resources(_host(request))


@router.get("/engine/models")
async def local_models(request: Request) -> dict[str, Any]:
    host = _host(request)
    models = await asyncio.to_thread(host.available)
    current = host.loaded.info.path if host.loaded else None
    return {"data": [{**asdict(model), "path": str(model.path), "model_dir": str(model.model_dir),
                      "loaded": model.path == current} for model in models]}


@router.post("/engine/switch")
async def switch(body: SwitchRequest, request: Request,
                 principal: Principal = Depends(admin_principal)) -> dict[str, Any]:
    host = _host(request)
    stages: list[dict[str, Any]] = []
    await model_actions.switch(host, services_of(request.app).sessionmaker, body.model, actor_user_id=principal.user.id,
                               ip=client_ip(request),
                               progress=lambda stage, fraction: stages.append({"stage": stage, "progress": fraction}))
    return {"model": host.metadata(), "progress": stages}


@router.delete("/engine/models/{name}", status_code=204)
async def delete_local_model(name: str, request: Request, principal: Principal = Depends(admin_principal)) -> None:
    """Delete a model from disk: only a name the scan lists, never the loaded model (409 ``model_in_use``)."""
    await model_actions.delete(_host(request), services_of(request.app).sessionmaker, name,
                               actor_user_id=principal.user.id, ip=client_ip(request), param="name")


@router.post("/engine/unload", status_code=204)
async def unload(request: Request) -> None:
    await _host(request).unload()


@router.post("/engine/downloads", status_code=202)
async def start_download(body: DownloadRequest, request: Request,
                         principal: Principal = Depends(admin_principal)) -> dict[str, Any]:
    job = await _downloads(request).start(body.source, body.name, body.revision, user_id=principal.user.id,
                                          ip=client_ip(request))
    return job.public()


@router.get("/engine/downloads")
async def list_downloads(request: Request) -> dict[str, Any]:
    return {"data": await _downloads(request).list()}


@router.get("/engine/downloads/{job_id}")
async def get_download(job_id: uuid.UUID, request: Request) -> dict[str, Any]:
    job = await _downloads(request).describe(job_id)
    if job is None:
        raise NotFound("no such download", param="job_id")
    return job


@router.delete("/engine/downloads/{job_id}", status_code=202)
async def cancel_download(job_id: uuid.UUID, request: Request) -> dict[str, Any]:
    downloads = _downloads(request)
    if not downloads.cancel(job_id):
        raise NotFound("no running download with this id on this server", param="job_id")
    job = await downloads.describe(job_id)
    assert job is not None
    return job


def _downloads(request: Request) -> DownloadJobs:
    return services_of(request.app).downloads
