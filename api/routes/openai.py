"""The OpenAI-compatible endpoints: chat completions, completions and models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from api.deps import CurrentPrincipal, SessionDep, current_principal
from api.schemas.openai import ChatCompletionRequest, CompletionRequest
from api.services import openai_format, serving
from api.services.backends import Backend, Backends

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(current_principal)])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request, principal: CurrentPrincipal,
                           session: SessionDep) -> dict[str, Any] | StreamingResponse:
    generation = await serving.begin(request.app.state, session, principal, body.model,
                                     openai_format.chat_request(body))
    if body.stream:
        return _streaming(openai_format.stream_chunks(generation, chat=True, include_usage=body.include_usage),
                          generation)
    return openai_format.chat_response(generation, await serving.collect(generation, request))


@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request, principal: CurrentPrincipal,
                      session: SessionDep) -> dict[str, Any] | StreamingResponse:
    generation = await serving.begin(request.app.state, session, principal, body.model,
                                     openai_format.completion_request(body))
    if body.stream:
        return _streaming(openai_format.stream_chunks(generation, chat=False, include_usage=body.include_usage),
                          generation)
    return openai_format.completion_response(generation, await serving.collect(generation, request))


def _streaming(chunks: AsyncIterator[bytes], generation: serving.Generation) -> StreamingResponse:
    # The background close also covers a client gone before the body started (the chunks' own cleanup never ran).
    return StreamingResponse(chunks, media_type="text/event-stream", headers=SSE_HEADERS,
                             background=BackgroundTask(generation.close))


def _model_card(backend: Backend) -> dict[str, Any]:
    return {"id": backend.model, "object": "model", "created": backend.created, "owned_by": "llmws",
            "backend": backend.kind, "metadata": backend.metadata}


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    backends: Backends = request.app.state.backends
    return {"object": "list", "data": [_model_card(backend) for backend in backends.available()]}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    backends: Backends = request.app.state.backends
    return _model_card(backends.resolve(model_id))
