"""Serving an OpenAI request for a gateway alias: the eligible deployments in routing order, the local engine
through the usual serving path, an upstream through the pass-through (`api/services/passthrough.py`)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.background import BackgroundTask

from api.routes.streaming import sse_response
from api.schemas.openai import SamplingFields
from api.services import limits, openai_format, passthrough, serving
from api.services.auth import Principal
from api.services.backends import Backend
from api.services.errors import RateLimited
from api.services.gateway import Alias, Deployment, Gateway
from api.services.metering import Meter
from engine.requests import GenerationRequest
from engine.upstream import UpstreamRefused, UpstreamUnavailable


async def serve_alias(request: Request, session: AsyncSession | None, principal: Principal, alias: Alias,
                      body: SamplingFields, build: Callable[[], GenerationRequest], *, chat: bool
                      ) -> dict[str, Any] | Response:
    """``session`` None: the caller has no limits to count (the fast path), so no database is touched here."""
    state = request.app.state
    gateway: Gateway = state.gateway
    candidates = gateway.candidates(alias)
    if not candidates:
        raise UpstreamUnavailable(f"no deployment of {alias.name} is available right now")
    raw = body.model_dump(mode="json", exclude_unset=True)
    request_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    counter = gateway.token_counter()
    failures: list[str] = []
    admitted = False
    for deployment in candidates:
        if deployment.provider is None:
            return await _serve_locally(request, session, principal, alias, deployment, body, build(),
                                        chat=chat, admit=not admitted and session is not None)
        meter = Meter.for_principal(state.usage_writer, principal, request_id, alias.name, deployment.backend)
        if not admitted and session is not None:
            try:
                await limits.admit(session, principal)
            except RateLimited:
                meter.record("rejected")
                raise
            admitted = True
        release = gateway.hold(deployment)
        try:
            opened = await passthrough.open_stream(
                gateway, deployment, "/chat/completions" if chat else "/completions",
                passthrough.apply_defaults(dict(raw), alias, deployment))
        except UpstreamUnavailable as exc:
            release()
            failures.append(exc.message)
            gateway.mark_unhealthy(deployment, exc.message)
            continue
        except UpstreamRefused:
            release()
            meter.record("error")
            raise
        relay = passthrough.Relay(meter, alias.name, counter(passthrough.prompt_text(raw)) if counter else
                                  passthrough.estimate_tokens(passthrough.prompt_text(raw)), counter, release,
                                  deployment.upstream_model)
        if body.stream:
            return sse_response(passthrough.relay_stream(opened, relay, include_usage=body.include_usage),
                                background=BackgroundTask(relay.finish))
        return await passthrough.relay_json(opened, relay)
    Meter.for_principal(state.usage_writer, principal, request_id, alias.name, "gateway").record("error")
    raise UpstreamUnavailable(f"every deployment of {alias.name} failed: {'; '.join(failures)}")


async def _serve_locally(request: Request, session: AsyncSession | None, principal: Principal, alias: Alias,
                         deployment: Deployment, body: SamplingFields, generation_request: GenerationRequest, *,
                         chat: bool, admit: bool) -> dict[str, Any] | StreamingResponse:
    state = request.app.state
    backend = Backend(model=alias.name, kind="local", client=state.gateway.host.engine())
    generation_request = _with_defaults(generation_request, body, alias, deployment)
    generation = await serving.begin(state, session, principal, alias.name, generation_request, backend=backend,
                                     admit=admit)
    if body.stream:
        return sse_response(openai_format.stream_chunks(generation, chat=chat, include_usage=body.include_usage),
                            background=BackgroundTask(generation.close))
    return openai_format.response(generation, await serving.collect(generation, request), chat=chat)


def _with_defaults(generation_request: GenerationRequest, body: SamplingFields, alias: Alias,
                   deployment: Deployment) -> GenerationRequest:
    defaults = {**alias.defaults, **deployment.defaults}
    sampling = generation_request.sampling
    changes: dict[str, Any] = {}
    if body.temperature is None and defaults.get("temperature") is not None:
        changes["temperature"] = defaults["temperature"]
    if body.top_p is None and defaults.get("top_p") is not None:
        changes["top_p"] = defaults["top_p"]
    given_max = body.max_tokens or getattr(body, "max_completion_tokens", None)
    if given_max is None and defaults.get("max_tokens") is not None:
        changes["max_tokens"] = defaults["max_tokens"]
    messages = generation_request.messages
    system = defaults.get("system_prompt")
    if system and messages is not None and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": system}, *messages]
    return dataclasses.replace(generation_request, messages=messages,
                               sampling=dataclasses.replace(sampling, **changes))
