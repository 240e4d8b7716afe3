"""The OpenAI-compatible endpoints: chat completions, completions and models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import CurrentPrincipal, SessionDep, current_principal
from api.schemas.openai import ChatCompletionRequest, CompletionRequest, SamplingFields
from api.services import forwarding, openai_format
from api.services.auth import Principal
from api.services.backends import Backend, Backends
from api.services.gateway import Gateway

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(current_principal)])

@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request, principal: CurrentPrincipal,
                           session: SessionDep) -> dict[str, Any] | Response:
    return await _serve(request, session, principal, body, openai_format.CHAT)


@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request, principal: CurrentPrincipal,
                      session: SessionDep) -> dict[str, Any] | Response:
    return await _serve(request, session, principal, body, openai_format.COMPLETION)


async def _serve(request: Request, session: AsyncSession, principal: Principal, body: SamplingFields,
                 endpoint: openai_format.Format) -> dict[str, Any] | Response:
    gateway: Gateway = request.app.state.gateway
    alias = gateway.alias(body.model, principal)
    if alias is not None:
        return await forwarding.serve_alias(request, session, principal, alias, body, endpoint)
    generation = await openai_format.begin(request.app.state, session, principal, body.model, body, endpoint)
    return await openai_format.answer(request, generation, body, endpoint)


# Where the model lies on the server's disk: for admins (GET /admin/engine/models), not for every caller.
ADMIN_ONLY_METADATA = frozenset({"source"})


def _model_card(backend: Backend, principal: Principal) -> dict[str, Any]:
    metadata = backend.metadata if principal.user.is_admin else {
        name: value for name, value in backend.metadata.items() if name not in ADMIN_ONLY_METADATA}
    return {"id": backend.model, "object": "model", "created": backend.created, "owned_by": "llmws",
            "backend": backend.kind, "metadata": metadata}


@router.get("/models")
async def list_models(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    backends: Backends = request.app.state.backends
    return {"object": "list", "data": [_model_card(backend, principal) for backend in backends.available(principal)]}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    backends: Backends = request.app.state.backends
    return _model_card(backends.resolve(model_id, principal), principal)
