"""The OpenAI endpoints that gateway aliases forward to their upstreams: embeddings, the Responses API (and a
stored response's follow-ups), audio transcription, translation and speech, image generation, moderations, and
vLLM's rerank and score. Each reads only `model` (and what routing needs) and hands the body on as it came; the
local engine does none of these yet and says so."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import CurrentPrincipal, SessionDep, current_principal
from api.lifespan import services_of
from api.openai import forwarded_endpoints as endpoints
from api.openai import forwarding, multipart_body, passthrough
from api.openai.forwarding import Endpoint
from api.openai.response_routes import ResponseRoute, ResponseRoutes, stored_response
from api.openai.schemas import ForwardedFields
from api.services.accounts.principal import Principal
from api.services.errors import InvalidInput
from api.services.gateway.gateway import Deployment, Gateway

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(current_principal)])


def _json_route(path: str, endpoint: Endpoint, what: str) -> None:
    # The fields LLMWS reads are checked as for chat (the route's 400); the client's own JSON is what goes on.
    async def serve(_fields: ForwardedFields, request: Request, principal: CurrentPrincipal,
                    session: SessionDep) -> Response:
        return await _serve(request, session, principal, endpoint, what, await request.json())

    serve.__name__ = path.strip("/").replace("/", "_")
    router.post(path, response_model=None, summary=f"{what[0].upper()}{what[1:]} (gateway aliases)")(serve)


# The upload as OpenAI documents it (its other fields, `prompt`, `language`, `response_format`, ..., go on as
# sent); read by hand, not by FastAPI, so that the file is never decoded or re-encoded.
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["model", "file"], "additionalProperties": True, "properties": {
        "model": {"type": "string", "minLength": 1}, "file": {"type": "string", "format": "binary"},
        "stream": {"type": "boolean"}}}}}}}


def _upload_route(path: str, endpoint: Endpoint, what: str) -> None:
    async def serve(request: Request, principal: CurrentPrincipal, session: SessionDep) -> Response:
        upload = multipart_body.parse(await request.body(), request.headers.get("content-type", ""))
        if not upload.files:
            raise InvalidInput("the upload carries no file (a `file` part)", param="file", code="missing_file")
        fields: dict[str, Any] = {**upload.fields, "stream": upload.fields.get("stream", "").lower() == "true"}
        return await _serve(request, session, principal, endpoint, what, fields,
                            passthrough.RawBody(upload.content_type, upload.with_model))

    serve.__name__ = path.strip("/").replace("/", "_")
    router.post(path, response_model=None, summary=f"{what[0].upper()}{what[1:]} (gateway aliases)",
                openapi_extra=UPLOAD_BODY)(serve)


for _path, _endpoint, _what in (("/embeddings", endpoints.EMBEDDINGS, "embeddings"),
                                ("/responses", endpoints.RESPONSES, "the Responses API"),
                                ("/audio/speech", endpoints.SPEECH, "speech"),
                                ("/images/generations", endpoints.IMAGES, "image generation"),
                                ("/moderations", endpoints.MODERATIONS, "moderation"),
                                ("/rerank", endpoints.RERANK, "rerank"), ("/score", endpoints.SCORE, "score")):
    _json_route(_path, _endpoint, _what)
for _path, _endpoint, _what in (("/audio/transcriptions", endpoints.TRANSCRIPTIONS, "audio transcription"),
                                ("/audio/translations", endpoints.TRANSLATIONS, "audio translation")):
    _upload_route(_path, _endpoint, _what)


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
    services = services_of(request.app)
    return await stored_response(services.gateway, services.response_routes, principal, response_id, method, suffix,
                                 request.url.query)


async def _serve(request: Request, session: AsyncSession, principal: Principal, endpoint: Endpoint, what: str,
                 body: dict[str, Any], raw: passthrough.RawBody | None = None) -> Response:
    gateway: Gateway = services_of(request.app).gateway
    model = body["model"]
    alias = gateway.alias(model, principal)
    if alias is None or all(deployment.provider is None for deployment in alias.deployments):
        services_of(request.app).backends.resolve(model, principal)  # an unknown model is refused as on every route
        raise InvalidInput(f"the model '{model}' is served by the local engine, which does not do {what} yet: "
                           "ask for a gateway alias served by an upstream", param="model",
                           code="unsupported_by_local_engine")
    routes: ResponseRoutes = services_of(request.app).response_routes
    follows = body.get("previous_response_id") if endpoint is endpoints.RESPONSES else None
    route = routes.find(follows, principal.user.id) if isinstance(follows, str) else None
    if route is not None and route.alias == alias.name:
        # Only the deployment that holds the response it follows can serve it: the alias narrowed to that one.
        alias = replace(alias, deployments=[d for d in alias.deployments if d.id == route.deployment_id])

    def remember(deployment: Deployment, payload: dict[str, Any]) -> None:
        if (identifier := endpoints.response_id(payload)) is not None:
            routes.remember(identifier, ResponseRoute(principal.user.id, alias.name, deployment.id))

    answer = await forwarding.forward(request, session, principal, alias, endpoint, body, raw=raw,
                                      observe=remember if endpoint is endpoints.RESPONSES else None)
    assert isinstance(answer, Response)  # no local path: never the local engine's plain answer
    return answer
