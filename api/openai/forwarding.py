"""Serving a request for a gateway alias, for every OpenAI endpoint: the deployments in routing order
(`api/services/gateway/routing.py`), the user's generation slots and limits taken once, the request forwarded as
the client sent it (only ``model`` rewritten) through the adapter of the deployment's provider kind, failover before the
first chunk, and the answer relayed back with its usage metered (`api/openai/passthrough.py`). A deployment on
the local engine is served by the endpoint's own local path, which validates what the engine can do.

`forward` takes any JSON body; an `Endpoint` says what the router must know of it.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from api import disconnects, tracing
from api.lifespan import services_of
from api.openai import passthrough
from api.services.accounts.principal import Principal
from api.services.chat import serving
from api.services.errors import RateLimited
from api.services.gateway import routing
from api.services.gateway.gateway import Alias, Deployment, Gateway
from api.services.gateway.upstream_adapters import adapter_for
from api.services.usage import limits
from api.services.usage.metering import Meter
from api.services.usage.writer import Reservation
from api.sse import EventStreamResponse
from engine.errors import UpstreamUnavailable
from engine.requests import SamplingParams
from engine.upstream import estimate_tokens


@dataclass(frozen=True)
class LocalTurn:
    """A request for the local engine (an alias's deployment there: the body with the alias's defaults), and
    whether the caller's limits are still to be counted (``admit``; else ``reservation`` is what counted them)."""

    request: Request
    session: AsyncSession | None
    principal: Principal
    alias: Alias | None  # None: a model of the local engine's own, asked for by its name
    body: dict[str, Any]
    admit: bool
    reservation: Reservation | None


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI endpoint as the router sees it (the body's own shape is the upstream's business)."""

    path: str  # after the base URL's `/v1`, e.g. "/chat/completions"
    id_prefix: str  # of the request ids in the usage rows
    prompt_text: Callable[[dict[str, Any]], str] = passthrough.prompt_text
    output_texts: passthrough.Texts = passthrough.choice_texts
    usage: passthrough.UsageReader = passthrough.usage_of
    stream_usage: bool = False  # a stream reports usage only when asked (stream_options.include_usage)
    sampling_defaults: bool = False  # the alias's temperature, top_p, max_tokens and system prompt apply
    done_marker: bool = True  # a stream ends with `data: [DONE]`
    generates: bool = True  # a limit reserves the answer's most tokens too (not for embeddings, speech, ...)
    local: Callable[[LocalTurn], Awaitable[Response | dict[str, Any]]] | None = None  # None: no local path


@tracing.traced_generation
async def forward(request: Request, session: AsyncSession | None, principal: Principal, alias: Alias,
                  endpoint: Endpoint, body: dict[str, Any], *, raw: passthrough.RawBody | None = None,
                  observe: Callable[[Deployment, dict[str, Any]], None] | None = None) -> Response | dict[str, Any]:
    """Serve ``body`` (the client's JSON object) for ``alias``. ``session`` None: the caller has no limits to
    count, so no database is touched here. ``raw``: the body goes upstream as those bytes (a multipart upload;
    ``body`` is then what was read of it). ``observe`` sees each answer or event of the deployment that serves
    it."""
    services = services_of(request.app)
    gateway = services.gateway
    request_id = f"{endpoint.id_prefix}-{uuid.uuid4().hex}"
    stream = body.get("stream") is True
    choices = body.get("n") if isinstance(body.get("n"), int) and body["n"] > 0 else 1
    admitted = session is None  # nothing to count
    reservation: Reservation | None = None  # what the count reserved, settled by whichever meter records last

    async def attempt(deployment: Deployment, _alone: bool) -> _Upstream | _Local:
        nonlocal admitted, reservation
        given = with_defaults(body, alias, deployment) if endpoint.sampling_defaults else body
        if deployment.provider is None:
            if endpoint.local is None:
                raise routing.NextDeployment(f"the local engine does not serve {endpoint.path}")
            return _Local(await endpoint.local(LocalTurn(request, session, principal, alias, given,
                                                         not admitted, reservation)))
        meter = Meter.for_principal(services.usage_writer, principal, request_id, alias.name, deployment.backend)
        meter.reservation = reservation
        slot = serving.take_slots(services.generation_slots, principal, choices, meter)
        try:
            if not admitted:
                assert session is not None
                try:
                    reservation = meter.reservation = await limits.admit(
                        session, principal, choices=choices,
                        reserve_tokens=_reservation(endpoint, given, choices, gateway))
                except RateLimited:
                    meter.record("rejected")
                    raise
                admitted = True
            with tracing.backend_call("upstream", {"llmws.backend": deployment.backend}):
                opened = await disconnects.unless_client_leaves(request, adapter_for(deployment).open(
                    deployment, endpoint.path, given, stream_usage=endpoint.stream_usage, raw=raw))
        except disconnects.ClientGone:
            slot.release()
            meter.record("cancelled")
            raise
        except (UpstreamUnavailable, routing.NextDeployment):
            slot.release()  # the next deployment meters it
            raise
        except BaseException:
            slot.release()
            meter.record("error")
            raise
        return _Upstream(opened, meter, slot)

    try:
        with tracing.step("llmws.route", {"gen_ai.request.model": alias.name}) as route:
            if route.is_recording():  # the candidates again, only for a trace: first_to_open takes its own
                route.set_attribute("llmws.deployments",
                                    [deployment.backend for deployment in gateway.candidates(alias)])
            chosen = await routing.first_to_open(gateway, alias, attempt)
    except disconnects.ClientGone:
        return Response(status_code=499)  # nobody reads it; "client closed request" in the access log
    except UpstreamUnavailable:
        # Every deployment down or failed: a failed request all the same, in the usage too.
        failed = Meter.for_principal(services.usage_writer, principal, request_id, alias.name, "gateway")
        failed.reservation = reservation
        failed.record("error")
        raise
    if isinstance(chosen.opened, _Local):
        chosen.release()  # the local engine's own queue counts what it runs
        return chosen.opened.answer
    opened, meter, slot = chosen.opened.opened, chosen.opened.meter, chosen.opened.slot
    relay = passthrough.Relay(meter, alias.name, endpoint.prompt_text(body), gateway.token_counter(),
                              _releasing(chosen.release, slot.release), chosen.deployment.upstream_model,
                              texts=endpoint.output_texts, usage=endpoint.usage, done_marker=endpoint.done_marker,
                              observe=functools.partial(observe, chosen.deployment) if observe else None)
    if stream:
        options = body.get("stream_options")
        # Usage that LLMWS did not ask for is the client's (a Responses or transcription stream reports its own).
        include_usage = not endpoint.stream_usage or (isinstance(options, dict)
                                                      and options.get("include_usage") is True)
        return EventStreamResponse(passthrough.relay_stream(opened, relay, include_usage=include_usage),
                                   after=functools.partial(passthrough.settle, opened, relay))
    if not passthrough.is_json(opened.response):  # speech audio, a plain-text transcript: the bytes as they come
        return EventStreamResponse(passthrough.relay_bytes(opened, relay),
                                   after=functools.partial(passthrough.settle, opened, relay),
                                   media_type=opened.response.headers.get("content-type"))
    return await passthrough.relay_json(opened, relay)


@dataclass(frozen=True)
class _Upstream:
    opened: passthrough.Opened
    meter: Meter
    slot: serving.Slot


@dataclass(frozen=True)
class _Local:
    answer: Response | dict[str, Any]


def _releasing(*releases: Callable[[], None]) -> Callable[[], None]:
    """One release for what a forwarded request holds (its deployment's count, the user's slots); each part gives
    itself back once."""
    def release() -> None:
        for part in releases:
            part()
    return release


def _reservation(endpoint: Endpoint, body: dict[str, Any], choices: int, gateway: Gateway) -> int:
    """The most an upstream answer may count: the prompt (estimated with the local tokenizer) and max_tokens per
    choice; an upstream's own default for an unset max_tokens is unknown, so the engine's default stands in."""
    count = gateway.token_counter() or estimate_tokens
    if not endpoint.generates:
        return count(endpoint.prompt_text(body))
    most = next((value for name in ("max_tokens", "max_completion_tokens", "max_output_tokens")
                 if isinstance(value := body.get(name), int) and value > 0), SamplingParams.max_tokens)
    return count(endpoint.prompt_text(body)) + most * choices


def with_defaults(body: dict[str, Any], alias: Alias, deployment: Deployment) -> dict[str, Any]:
    """The body with the alias's and the deployment's defaults for what the client did not set: temperature,
    top_p, max_tokens, and a system prompt where the messages have none. The body itself is left as it is."""
    defaults = {**alias.defaults, **deployment.defaults}
    update: dict[str, Any] = {name: defaults[name] for name in ("temperature", "top_p")
                              if body.get(name) is None and defaults.get(name) is not None}
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is None \
            and defaults.get("max_tokens") is not None:
        update["max_tokens"] = defaults["max_tokens"]
    messages = body.get("messages")
    system = defaults.get("system_prompt")
    if system and isinstance(messages, list) and not any(
            isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages):
        update["messages"] = [{"role": "system", "content": system}, *messages]
    return {**body, **update} if update else body
