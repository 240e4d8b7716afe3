"""Liveness, readiness and Prometheus metrics: the three routes open to anyone.

/readyz tells anyone only each check's verdict; the details (model paths, provider names, revisions, errors) are
for an admin's credential, since they map the deployment for whoever can reach the port."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.deps import CallerIsAdmin
from api.lifespan import services_of
from db.migrate import schema_state

router = APIRouter(tags=["health"])

READINESS_TIMEOUT_S = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers. Touches nothing else, so it stays fast when the database is not."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request, is_admin: CallerIsAdmin) -> JSONResponse:
    """Readiness: every check with its own verdict; 503 while any fails. Details only for an admin."""
    checks = {"database": await _check_database(request)}
    checks["migrations"] = await _check_migrations(request) if checks["database"]["ok"] else {
        "ok": False, "detail": "database unreachable"}
    checks["engine"] = await _check_engine(request)
    checks["providers"] = _providers(request)
    ready = all(check["ok"] for check in checks.values())
    shown = checks if is_admin else {name: {"ok": check["ok"]} for name, check in checks.items()}
    return JSONResponse({"status": "ready" if ready else "not_ready", "checks": shown},
                        status_code=200 if ready else 503)


async def _check_database(request: Request) -> dict[str, Any]:
    async def ping() -> None:
        async with services_of(request.app).db_engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(ping(), READINESS_TIMEOUT_S)
    except Exception as exc:  # any failure means not ready; the detail says which
        return {"ok": False, "detail": type(exc).__name__}
    return {"ok": True}


async def _check_migrations(request: Request) -> dict[str, Any]:
    try:
        state = await asyncio.wait_for(schema_state(services_of(request.app).db_engine), READINESS_TIMEOUT_S)
    except Exception as exc:
        return {"ok": False, "detail": type(exc).__name__}
    return {"ok": state.at_head, "current": state.current, "head": list(state.heads)}


async def _check_engine(request: Request) -> dict[str, Any]:
    """A real one-token generation (cached a few seconds by the engine): a wedged engine shows red here."""
    host = services_of(request.app).model_host
    if host.local is None:
        if host.loading:  # aliases may be servable, but requests for the model on its way would get 503s
            return {"ok": False, "detail": host.reason}
        gateway = services_of(request.app).gateway
        if any(gateway.candidates(alias) for alias in gateway.aliases.values()):
            return {"ok": True, "detail": f"no local model ({host.reason}); serving through providers"}
        return {"ok": False, "detail": host.reason}
    health = await host.local.check_health()
    return {"ok": health.ok, "detail": health.detail, "model": host.loaded.info.name if host.loaded else None}


def _providers(request: Request) -> dict[str, Any]:
    """The upstreams' health, for the operator: a provider being down does not make this replica unready (its
    other models still serve, and failover handles the rest)."""
    states = {p.name: p.public()["status"] for p in services_of(request.app).gateway.providers.values() if p.is_active}
    healthy = sum(status == "healthy" for status in states.values())
    return {"ok": True, "detail": f"{healthy} of {len(states)} active providers healthy", "providers": states}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
