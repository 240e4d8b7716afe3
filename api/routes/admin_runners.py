"""Admin REST for runners: templates, an exact command preview, launch, stop, status and live logs (SSE)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from api.deps import admin_principal, client_ip
from api.lifespan import services_of
from api.schemas.common import RequestBody
from api.services import audit
from api.services.gateway.runner_templates import LaunchPlan, Template, free_port, plan
from api.services.gateway.runners import RunnerManager
from api.sse import sse_response

router = APIRouter(prefix="/admin/runners", tags=["admin"], dependencies=[Depends(admin_principal)])


class LaunchIn(RequestBody):
    template: str = Field(min_length=1, max_length=50)
    model: str = Field(min_length=1, max_length=1000, description="A model in the model folders: its name or path.")
    port: int | None = Field(None, description="Default: a free port.")
    context: int | None = Field(None, ge=1, le=10_000_000)
    gpu_layers: int | None = Field(None, ge=-1, le=100_000)
    extras: list[str] = Field(default_factory=list, max_length=16)
    name: str | None = Field(None, min_length=1, max_length=50, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    restart: bool = False


def _manager(request: Request) -> RunnerManager:
    return services_of(request.app).runners


def _plan(request: Request, body: LaunchIn) -> LaunchPlan:
    templates: dict[str, Template] = services_of(request.app).runner_templates
    return plan(templates, body.template, body.model, body.port or free_port(),
                services_of(request.app).model_host.config.model_dirs, context=body.context, gpu_layers=body.gpu_layers,
                extras=body.extras)


@router.get("/templates")
async def templates(request: Request) -> dict[str, Any]:
    return {"data": [{"name": t.name, "description": t.description, "available": t.available(),
                      "extras": sorted(t.extras), "context": t.context is not None,
                      "gpu_layers": t.gpu_layers is not None}
                     for t in services_of(request.app).runner_templates.values()]}


@router.post("/preview")
async def preview(body: LaunchIn, request: Request) -> dict[str, Any]:
    """The exact argument list a launch with this body would run (nothing is started)."""
    launch = _plan(request, body)
    return {"argv": launch.argv, "command": launch.command, "port": launch.port}


@router.post("", status_code=201)
async def launch(body: LaunchIn, request: Request) -> dict[str, Any]:
    launch_plan = _plan(request, body)
    runner = await _manager(request).launch(launch_plan, body.name or body.template, restart=body.restart)
    async with services_of(request.app).sessionmaker.begin() as session:
        audit.record(session, "runner.launched", actor_user_id=request.state.principal.user.id,
                     subject=runner.name, target_type="runner", target_id=runner.id,
                     ip=client_ip(request), detail={"argv": launch_plan.argv})
    return runner.public()


@router.get("")
async def list_runners(request: Request) -> dict[str, Any]:
    return {"data": [runner.public() for runner in _manager(request).list()]}


@router.get("/{runner_id}")
async def get_runner(runner_id: str, request: Request) -> dict[str, Any]:
    return _manager(request).get(runner_id).public()


@router.post("/{runner_id}/stop")
async def stop_runner(runner_id: str, request: Request) -> dict[str, Any]:
    runner = await _manager(request).stop(runner_id)
    async with services_of(request.app).sessionmaker.begin() as session:
        audit.record(session, "runner.stopped", actor_user_id=request.state.principal.user.id,
                     subject=runner.name, target_type="runner", target_id=runner.id,
                     ip=client_ip(request), detail={"exit_code": runner.exit_code})
    return runner.public()


@router.delete("/{runner_id}", status_code=204)
async def forget_runner(runner_id: str, request: Request) -> None:
    _manager(request).forget(runner_id)


@router.get("/{runner_id}/logs")
async def logs(runner_id: str, request: Request, after: int = Query(0, ge=0)) -> StreamingResponse:
    """The runner's output as server-sent events (`id` is the line number; `Last-Event-ID` resumes), live until
    the runner stops."""
    manager = _manager(request)
    manager.get(runner_id)  # 404 before the stream starts
    resume = request.headers.get("last-event-id", "")
    start = int(resume) if resume.isdigit() else after

    async def events() -> AsyncIterator[bytes]:
        async for number, line in manager.follow(runner_id, start):
            yield f"id: {number}\ndata: {json.dumps({'line': line})}\n\n".encode()
        yield b"event: end\ndata: {}\n\n"

    return sse_response(events())
