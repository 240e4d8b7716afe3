"""`/v1/chat/completions` and `/v1/completions`: where a body goes, decided once for the route and the gateway's fast
path alike. A model that is an alias goes through the gateway (`forwarding.forward`, the body as sent); any other
model, and an alias's deployment on the local engine, is served by the local engine from the strict body, which
refuses with a 400 naming the field what the engine cannot do."""

from __future__ import annotations

import functools
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from api.lifespan import services_of
from api.openai import format as openai_format
from api.openai import forwarding
from api.openai.forwarding import Endpoint, LocalTurn
from api.openai.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from api.services.accounts.principal import Principal
from api.services.gateway.backends import Backend
from api.services.gateway.gateway import Gateway


async def serve(request: Request, session: AsyncSession | None, principal: Principal, endpoint: Endpoint,
                body: dict[str, Any]) -> Response | dict[str, Any]:
    """Serve ``body``, the client's JSON object (its fields LLMWS reads already checked)."""
    gateway: Gateway = services_of(request.app).gateway
    alias = gateway.alias(body.get("model"), principal)
    if alias is not None:
        return await forwarding.forward(request, session, principal, alias, endpoint, body)
    assert endpoint.local is not None
    return await endpoint.local(LocalTurn(request, session, principal, None, body, True, None))


def strict(schema: type[BaseModel], body: dict[str, Any]) -> Any:
    """``body`` as ``schema`` (the local engine's whole request), or the route's own 400 naming the field."""
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
                                     ) from None


async def _local(schema: type[SamplingFields], endpoint: openai_format.Format,
                 turn: LocalTurn) -> Response | dict[str, Any]:
    body = strict(schema, turn.body)
    services = services_of(turn.request.app)
    backend = Backend(model=turn.alias.name, kind="local", client=services.gateway.host.engine()) \
        if turn.alias is not None else None
    # An alias's defaults are already in the body (`forwarding.with_defaults` fills only what the client left out).
    generation = await openai_format.begin(services, turn.session, turn.principal, body.model, body, endpoint,
                                           backend=backend, admit=turn.admit, reservation=turn.reservation)
    return await openai_format.answer(turn.request, generation, body, endpoint)


CHAT = Endpoint("/chat/completions", "chatcmpl", stream_usage=True, sampling_defaults=True,
                local=functools.partial(_local, ChatCompletionRequest, openai_format.CHAT))
COMPLETIONS = Endpoint("/completions", "cmpl", stream_usage=True, sampling_defaults=True,
                       local=functools.partial(_local, CompletionRequest, openai_format.COMPLETION))
