"""The OpenAI-compatible endpoints: chat completions, completions and models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from api.deps import CurrentPrincipal, SessionDep, current_principal
from api.lifespan import services_of
from api.openai import endpoints as openai_endpoints
from api.openai.schemas import ChatCompletionFields, CompletionFields
from api.services.accounts.principal import Principal
from api.services.gateway.backends import Backend, Backends

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(current_principal)])

# The body is read as the fields LLMWS itself needs (checked here, as the route's 400); the client's own JSON is
# what goes on: forwarded as sent to an upstream alias, or validated whole for the local engine.
@router.post("/chat/completions", response_model=None)
async def chat_completions(_fields: ChatCompletionFields, request: Request, principal: CurrentPrincipal,
                           session: SessionDep) -> dict[str, Any] | Response:
    return await openai_endpoints.serve(request, session, principal, openai_endpoints.CHAT, await request.json())


@router.post("/completions", response_model=None)
async def completions(_fields: CompletionFields, request: Request, principal: CurrentPrincipal,
                      session: SessionDep) -> dict[str, Any] | Response:
    return await openai_endpoints.serve(request, session, principal, openai_endpoints.COMPLETIONS,
                                        await request.json())


# Where the model lies on the server's disk: for admins (GET /admin/engine/models), not for every caller.
ADMIN_ONLY_METADATA = frozenset({"source"})


def _model_card(backend: Backend, principal: Principal) -> dict[str, Any]:
    metadata = backend.metadata if principal.user.is_admin else {
        name: value for name, value in backend.metadata.items() if name not in ADMIN_ONLY_METADATA}
    return {"id": backend.model, "object": "model", "created": backend.created, "owned_by": "llmws",
            "backend": backend.kind, "metadata": metadata}


@router.get("/models")
async def list_models(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    backends: Backends = services_of(request.app).backends
    return {"object": "list", "data": [_model_card(backend, principal) for backend in backends.available(principal)]}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    backends: Backends = services_of(request.app).backends
    return _model_card(backends.resolve(model_id, principal), principal)
