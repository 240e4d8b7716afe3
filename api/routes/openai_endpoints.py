"""The OpenAI endpoints that gateway aliases forward to their upstreams: embeddings, the Responses API (and a
stored response's follow-ups), audio transcription, translation and speech, image generation, moderations, and
vLLM's rerank and score. Each reads only `model` (and what routing needs) and hands the body on as it came; the
local engine does none of these yet and says so."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import CurrentPrincipal, SessionDep, current_principal
from api.services import forwarded_endpoints as endpoints
from api.services import multipart_body, raw_forwarding
from api.services.auth import Principal
from api.services.errors import InvalidInput
from api.services.forwarded_endpoints import Endpoint
from api.services.gateway import Gateway
from api.services.response_routes import ResponseRoutes

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(current_principal)])


def _json_route(path: str, endpoint: Endpoint) -> None:
    async def serve(request: Request, principal: CurrentPrincipal, session: SessionDep) -> Response:
        fields = await _json_body(request)
        return await _serve(request, session, principal, endpoint, fields, _json_with_model(fields),
                            "application/json")

    serve.__name__ = endpoint.path.strip("/").replace("/", "_")
    router.post(path, response_model=None, summary=f"{endpoint.what.capitalize()} (gateway aliases)")(serve)


def _upload_route(path: str, endpoint: Endpoint) -> None:
    async def serve(request: Request, principal: CurrentPrincipal, session: SessionDep) -> Response:
        upload = multipart_body.parse(await request.body(), request.headers.get("content-type", ""))
        if not upload.files:
            raise InvalidInput("the upload carries no file (a `file` part)", param="file", code="missing_file")
        return await _serve(request, session, principal, endpoint, dict(upload.fields), upload.with_model,
                            upload.content_type)

    serve.__name__ = endpoint.path.strip("/").replace("/", "_")
    router.post(path, response_model=None, summary=f"{endpoint.what.capitalize()} (gateway aliases)")(serve)


for _path, _endpoint in (("/embeddings", endpoints.EMBEDDINGS), ("/responses", endpoints.RESPONSES),
                         ("/audio/speech", endpoints.SPEECH), ("/images/generations", endpoints.IMAGES),
                         ("/moderations", endpoints.MODERATIONS), ("/rerank", endpoints.RERANK),
                         ("/score", endpoints.SCORE)):
    _json_route(_path, _endpoint)
for _path, _endpoint in (("/audio/transcriptions", endpoints.TRANSCRIPTIONS),
                         ("/audio/translations", endpoints.TRANSLATIONS)):
    _upload_route(_path, _endpoint)


@router.get("/responses/{response_id}", response_model=None, summary="A stored response")
async def get_response(response_id: str, request: Request, principal: CurrentPrincipal) -> Response:
    return await _stored(request, principal, response_id, "GET")


@router.delete("/responses/{response_id}", response_model=None, summary="Delete a stored response")
async def delete_response(response_id: str, request: Request, principal: CurrentPrincipal) -> Response:
    return await _stored(request, principal, response_id, "DELETE")


@router.get("/responses/{response_id}/input_items", response_model=None, summary="A stored response's input")
async def response_input_items(response_id: str, request: Request, principal: CurrentPrincipal) -> Response:
    return await _stored(request, principal, response_id, "GET", "/input_items")


@router.post("/responses/{response_id}/cancel", response_model=None, summary="Cancel a background response")
async def cancel_response(response_id: str, request: Request, principal: CurrentPrincipal) -> Response:
    return await _stored(request, principal, response_id, "POST", "/cancel")


async def _stored(request: Request, principal: Principal, response_id: str, method: str, suffix: str = ""
                  ) -> Response:
    state = request.app.state
    return await raw_forwarding.stored_response(state.gateway, state.response_routes, principal, response_id,
                                                method, suffix, request.url.query)


async def _serve(request: Request, session: AsyncSession, principal: Principal, endpoint: Endpoint,
                 fields: dict[str, Any], body_for: Callable[[str], bytes], content_type: str) -> Response:
    gateway: Gateway = request.app.state.gateway
    model = fields["model"]
    alias = gateway.alias(model, principal)
    if alias is None or not raw_forwarding.upstream_deployments(alias):
        request.app.state.backends.resolve(model, principal)  # an unknown model is a 404, as on every route
        raise InvalidInput(f"the model '{model}' is served by the local engine, which does not do "
                           f"{endpoint.what} yet: ask for a gateway alias served by an upstream", param="model",
                           code="unsupported_by_local_engine")
    pinned = None
    follows = fields.get("previous_response_id") if endpoint is endpoints.RESPONSES else None
    if isinstance(follows, str):
        routes: ResponseRoutes = request.app.state.response_routes
        route = routes.find(follows, principal.user.id)
        if route is not None and route.alias == alias.name:
            pinned = route.deployment_id
    call = raw_forwarding.Forwarded(endpoint, fields, body_for, content_type, pinned)
    return await raw_forwarding.forward(request, session, principal, alias, call)


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):
        raise InvalidInput("the body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", code="invalid_json")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidInput("the request names no model (`model`)", param="model", code="missing_model")
    return body


def _json_with_model(body: dict[str, Any]) -> Callable[[str], bytes]:
    """The body as the client sent it, with `model` set to an upstream's name (its place among the keys kept)."""
    def encode(model: str) -> bytes:
        return json.dumps({**body, "model": model}, separators=(",", ":"), ensure_ascii=False).encode()
    return encode
