"""Serving an OpenAI request for a gateway alias: the eligible deployments in routing order, the local engine
through the usual serving path, an upstream through the pass-through (`api/services/passthrough.py`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas.openai import ChatMessage, SamplingFields
from api.services import limits, openai_format, passthrough, serving
from api.services.auth import Principal
from api.services.backends import Backend
from api.services.chat.sampling import AliasDefaults
from api.services.errors import RateLimited
from api.services.gateway import Alias, Deployment, Gateway
from api.services.metering import Meter
from api.services.openai_format import Format
from api.services.usage_writer import Reservation
from api.sse import EventStreamResponse
from engine.requests import SamplingParams
from engine.upstream import UpstreamUnavailable, estimate_tokens


async def serve_alias(request: Request, session: AsyncSession | None, principal: Principal, alias: Alias,
                      body: SamplingFields, endpoint: Format) -> dict[str, Any] | Response:
    """``session`` None: the caller has no limits to count (the fast path), so no database is touched here."""
    state = request.app.state
    gateway: Gateway = state.gateway
    candidates = gateway.candidates(alias)
    request_id = endpoint.new_id()
    if not candidates:  # every deployment is known to be down: a failed request all the same, in the usage too
        Meter.for_principal(state.usage_writer, principal, request_id, alias.name, "gateway").record("error")
        raise UpstreamUnavailable(f"no deployment of {alias.name} is available right now")
    failures: list[str] = []
    admitted = session is None  # nothing to count
    reservation: Reservation | None = None  # what the count reserved, settled by whichever meter records last
    for deployment in candidates:
        if deployment.provider is None:
            backend = Backend(model=alias.name, kind="local", client=gateway.host.engine())
            generation = await openai_format.begin(
                state, session, principal, alias.name, body, endpoint, backend=backend, admit=not admitted,
                reservation=reservation, alias=AliasDefaults.of(alias.defaults, deployment.defaults))
            return await openai_format.answer(request, generation, body, endpoint)
        given = with_defaults(body, alias, deployment)
        meter = Meter.for_principal(state.usage_writer, principal, request_id, alias.name, deployment.backend)
        meter.reservation = reservation
        raw = given.model_dump(mode="json", exclude_unset=True)
        slot = serving.take_slots(state.generation_slots, principal, given.n, meter)
        if not admitted:
            assert session is not None
            try:
                reservation = meter.reservation = await limits.admit(
                    session, principal, choices=given.n, reserve_tokens=_upstream_reservation(raw, given, gateway))
            except RateLimited:
                slot.release()
                meter.record("rejected")
                raise
            admitted = True
        release = _releasing(gateway.hold(deployment), slot.release)
        try:
            opened = await serving.unless_client_leaves(request, passthrough.open_stream(
                deployment, endpoint.path, raw))
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
        relay = passthrough.Relay(meter, alias.name, passthrough.prompt_text(raw), gateway.token_counter(), release,
                                  deployment.upstream_model)
        if body.stream:
            return EventStreamResponse(passthrough.relay_stream(opened, relay, include_usage=body.include_usage),
                                       after=functools.partial(passthrough.settle, opened, relay))
        return await passthrough.relay_json(opened, relay)
    failed = Meter.for_principal(state.usage_writer, principal, request_id, alias.name, "gateway")
    failed.reservation = reservation
    failed.record("error")
    raise UpstreamUnavailable(f"every deployment of {alias.name} failed: {'; '.join(failures)}")


def _releasing(*releases: Callable[[], None]) -> Callable[[], None]:
    """One release for what a forwarded request holds (its deployment's count, the user's slots); each part gives
    itself back once."""
    def release() -> None:
        for part in releases:
            part()
    return release


def _upstream_reservation(raw: dict[str, Any], given: SamplingFields, gateway: Gateway) -> int:
    """The most an upstream answer may count: the prompt (estimated with the local tokenizer) and max_tokens per
    choice; an upstream's own default for an unset max_tokens is unknown, so the engine's default stands in."""
    count = gateway.token_counter() or estimate_tokens
    most = given.max_tokens or getattr(given, "max_completion_tokens", None) or SamplingParams.max_tokens
    return count(passthrough.prompt_text(raw)) + most * given.n


def with_defaults(body: SamplingFields, alias: Alias, deployment: Deployment) -> SamplingFields:
    """The body with the alias's and the deployment's defaults for what the client did not set: temperature,
    top_p, max_tokens, and a system prompt where the messages have none."""
    defaults = AliasDefaults.of(alias.defaults, deployment.defaults)
    update: dict[str, Any] = {name: getattr(defaults.sampling, name) for name in ("temperature", "top_p")
                              if getattr(body, name) is None and getattr(defaults.sampling, name) is not None}
    given_max = body.max_tokens or getattr(body, "max_completion_tokens", None)
    if given_max is None and defaults.sampling.max_tokens is not None:
        update["max_tokens"] = defaults.sampling.max_tokens
    messages = getattr(body, "messages", None)
    system = defaults.system_prompt
    if system and messages is not None and not any(m.role in ("system", "developer") for m in messages):
        update["messages"] = [ChatMessage(role="system", content=system), *messages]
    return body.model_copy(update=update) if update else body
