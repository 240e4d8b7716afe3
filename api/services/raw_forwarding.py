"""Forwarding an OpenAI request other than chat (embeddings, responses, audio, images, moderations, rerank,
score) to an upstream deployment of an alias: the body as the client sent it with only `model` rewritten, the
user's concurrency slot, the limits, failover before the first byte, and one usage row.

The same steps as the chat pass-through (`api/services/forwarding.py`), for a body this module never decodes
beyond the fields the route read. A stored response's follow-up is pinned to the deployment that holds it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from api.services import limits, raw_relay, serving
from api.services.auth import Principal
from api.services.errors import NotFound, RateLimited
from api.services.forwarded_endpoints import RESPONSES, Endpoint, prompt_tokens, with_alias
from api.services.gateway import Alias, Deployment, Gateway
from api.services.metering import Meter
from api.services.response_routes import ResponseRoute, ResponseRoutes
from api.services.usage_writer import Reservation
from api.sse import EventStreamResponse
from engine.requests import SamplingParams
from engine.upstream import UpstreamUnavailable, estimate_tokens


@dataclass(frozen=True)
class Forwarded:
    """One request to forward: ``fields`` are what the route read (the JSON body, or a multipart upload's plain
    fields), ``body_for`` gives the body as sent with `model` set to an upstream's name; ``pinned``, a
    deployment id that alone may serve it (the one holding a stored response it follows)."""

    endpoint: Endpoint
    fields: dict[str, Any]
    body_for: Callable[[str], bytes]
    content_type: str
    pinned: int | None = None


def upstream_deployments(alias: Alias) -> list[Deployment]:
    return [deployment for deployment in alias.deployments if deployment.provider is not None]


async def forward(request: Request, session: AsyncSession, principal: Principal, alias: Alias,
                  call: Forwarded) -> Response:
    state = request.app.state
    gateway: Gateway = state.gateway
    request_id = f"{call.endpoint.path.strip('/').replace('/', '-')}-{uuid.uuid4().hex}"
    count = gateway.token_counter() or estimate_tokens
    prompt = prompt_tokens(call.endpoint, call.fields, count)
    candidates = _candidates(gateway, alias, call.pinned)
    if not candidates:
        Meter.for_principal(state.usage_writer, principal, request_id, alias.name, "gateway").record("error")
        held = " (the one that holds the response it follows)" if call.pinned is not None else ""
        raise UpstreamUnavailable(f"no upstream deployment of {alias.name}{held} is available right now")
    failures: list[str] = []
    reservation: Reservation | None = None
    admitted = False
    for deployment in candidates:
        meter = Meter.for_principal(state.usage_writer, principal, request_id, alias.name, deployment.backend)
        meter.reservation = reservation
        slot = serving.take_slots(state.generation_slots, principal, 1, meter)
        if not admitted:
            try:
                reservation = meter.reservation = await limits.admit(
                    session, principal, reserve_tokens=prompt + _most_generated(call))
            except RateLimited:
                slot.release()
                meter.record("rejected")
                raise
            admitted = True
        release = _releasing(gateway.hold(deployment), slot.release)
        try:
            opened = await serving.unless_client_leaves(request, _open(deployment, call))
        except serving.ClientGone:
            release()
            meter.record("cancelled")
            return Response(status_code=499)  # nobody reads it; "client closed request" in the access log
        except UpstreamUnavailable as exc:
            release()
            failures.append(exc.message)
            gateway.mark_unhealthy(deployment, exc.message)
            continue
        except BaseException:
            release()
            meter.record("error")
            raise
        counted = raw_relay.Count(meter, prompt, count, release)
        remember = functools.partial(_remember, state.response_routes, principal, alias, deployment)
        if opened.kind == "json":
            return await raw_relay.json_answer(opened, counted, alias.name, remember)
        after = functools.partial(raw_relay.settle, opened, counted)
        if opened.kind == "events":
            return EventStreamResponse(raw_relay.relay_events(opened, counted, alias.name, remember), after)
        return EventStreamResponse(raw_relay.relay_bytes(opened, counted), after,
                                   media_type=opened.response.headers.get("content-type"))
    failed = Meter.for_principal(state.usage_writer, principal, request_id, alias.name, "gateway")
    failed.reservation = reservation
    failed.record("error")
    raise UpstreamUnavailable(f"every deployment of {alias.name} failed: {'; '.join(failures)}")


async def stored_response(gateway: Gateway, routes: ResponseRoutes, principal: Principal, response_id: str,
                          method: str, suffix: str = "", query: str = "") -> Response:
    """A stored response's `GET`, `DELETE` or `/input_items`, from the deployment that made it; unmetered (no
    tokens are generated). A response this replica did not route, or another user's, is not found."""
    route = routes.find(response_id, principal.user.id)
    alias = gateway.alias(route.alias, principal) if route is not None else None
    deployment = next((d for d in upstream_deployments(alias) if route and d.id == route.deployment_id),
                      None) if alias is not None else None
    if deployment is None or deployment.provider is None:
        raise NotFound(f"no response '{response_id}' was made through this server (or it was forgotten)",
                       param="response_id", code="response_not_found")
    response = await deployment.provider.upstream.send(method, f"/responses/{response_id}{suffix}", query=query)
    try:
        body = await response.aread()
    except httpx.HTTPError as exc:
        raise UpstreamUnavailable(f"{deployment.provider.name} failed: {type(exc).__name__}") from exc
    finally:
        await response.aclose()
    media = response.headers.get("content-type", "application/json")
    if media.startswith("application/json"):
        with contextlib.suppress(ValueError):
            payload = json.loads(body)
            if with_alias(payload, alias.name):
                body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    if method == "DELETE":
        routes.forget(response_id)
    return Response(body, status_code=response.status_code, media_type=media)


def _candidates(gateway: Gateway, alias: Alias, pinned: int | None) -> list[Deployment]:
    if pinned is not None:  # only that deployment holds the response: tried whatever its last health check said
        return [deployment for deployment in upstream_deployments(alias) if deployment.id == pinned]
    return [deployment for deployment in gateway.candidates(alias) if deployment.provider is not None]


async def _open(deployment: Deployment, call: Forwarded) -> raw_relay.Opened:
    assert deployment.provider is not None
    model = deployment.upstream_model or str(call.fields.get("model"))
    response = await deployment.provider.upstream.send("POST", call.endpoint.path, content=call.body_for(model),
                                                       content_type=call.content_type)
    return await raw_relay.read_first(deployment, response)


def _most_generated(call: Forwarded) -> int:
    """What a limit reserves for the answer: a response's `max_output_tokens`, else the engine's default (an
    upstream's own is unknown); nothing for endpoints that generate no text."""
    if not call.endpoint.generates:
        return 0
    most = call.fields.get("max_output_tokens") if call.endpoint is RESPONSES else None
    return most if isinstance(most, int) and most > 0 else SamplingParams.max_tokens


def _remember(routes: ResponseRoutes, principal: Principal, alias: Alias, deployment: Deployment,
              response_id: str) -> None:
    routes.remember(response_id, ResponseRoute(principal.user.id, alias.name, deployment.id))


def _releasing(*releases: Callable[[], None]) -> Callable[[], None]:
    def release() -> None:
        for part in releases:
            part()
    return release
