"""The one way from an alias to a deployment, for every protocol: the eligible deployments in routing order
(`Gateway.candidates`), each one's in-flight count held while it serves, and failover before the first chunk: a
deployment that cannot be reached, times out, answers 5xx or fails before its first chunk hands over to the next
(and an unreachable upstream is marked unhealthy until its next check).

The OpenAI endpoints forward the client's own body through it (`api/openai/forwarding.py`); native chat and
WebSocket sessions generate through `RoutedClient`, the same loop behind the engine interface.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from api.services.gateway.gateway import Alias, Deployment, Gateway
from api.services.gateway.upstream_adapters import adapter_for
from engine.errors import UpstreamUnavailable
from engine.interface import EngineClient, EngineStats, Health
from engine.requests import EngineEvent, ErrorEvent, FinishEvent, GenerationRequest, StartEvent, TokenEvent

T = TypeVar("T")


class NextDeployment(UpstreamUnavailable):
    """This deployment cannot serve the request, though nothing says it is down: try the next one."""


@dataclass(frozen=True)
class Chosen(Generic[T]):
    deployment: Deployment
    opened: T
    release: Callable[[], None]  # ends the deployment's in-flight count (once)


async def first_to_open(gateway: Gateway, alias: Alias,
                        open_one: Callable[[Deployment, bool], Awaitable[T]]) -> Chosen[T]:
    """The first deployment of ``alias`` whose ``open_one(deployment, alone)`` returns (``alone``: it is the only
    candidate); one raising `UpstreamUnavailable` hands over to the next. Raises `UpstreamUnavailable` when none
    is left; anything else ``open_one`` raises ends the request."""
    candidates = gateway.candidates(alias)
    if not candidates:
        raise UpstreamUnavailable(f"no deployment of {alias.name} is available right now")
    failures: list[str] = []
    for deployment in candidates:
        release = gateway.hold(deployment)
        try:
            opened = await open_one(deployment, len(candidates) == 1)
        except NextDeployment as exc:
            release()
            failures.append(exc.message)
            continue
        except UpstreamUnavailable as exc:
            release()
            failures.append(exc.message)
            gateway.mark_unhealthy(deployment, exc.message)
            continue
        except BaseException:
            release()
            raise
        return Chosen(deployment, opened, release)
    raise UpstreamUnavailable(f"every deployment of {alias.name} failed: {'; '.join(failures)}")


def engine_client(gateway: Gateway, deployment: Deployment) -> EngineClient:
    """The deployment behind the engine interface: the local engine, or its provider's adapter."""
    if deployment.provider is None:
        return gateway.host.engine()
    return adapter_for(deployment).engine_client(deployment, gateway.token_counter())


class RoutedClient:
    """An alias behind the engine interface, for native chat and WebSocket sessions: `first_to_open` over its
    deployments, where opening one means reading up to its first token (an error event first hands over too,
    unless the deployment is the only one: then the error is the answer)."""

    def __init__(self, gateway: Gateway, alias: Alias) -> None:
        self.gateway = gateway
        self.alias = alias
        self._running: dict[str, EngineClient] = {}

    async def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        async def start(deployment: Deployment, alone: bool) -> tuple[EngineClient, AsyncIterator[EngineEvent],
                                                                    list[EngineEvent]]:
            client = engine_client(self.gateway, deployment)
            events = aiter(client.generate(request))
            held: list[EngineEvent] = []
            try:
                async for event in events:
                    held.append(_tagged(event, deployment) if isinstance(event, StartEvent) else event)
                    if isinstance(event, TokenEvent | FinishEvent | ErrorEvent):
                        break
            except BaseException:
                await _close(events)
                raise
            if held and isinstance(held[-1], ErrorEvent) and not alone:
                await _close(events)
                raise NextDeployment(held[-1].message)
            return client, events, held

        chosen = await first_to_open(self.gateway, self.alias, start)
        client, events, held = chosen.opened
        self._running[request.request_id] = client
        try:
            for event in held:
                yield event
            async for event in events:
                yield event
        finally:
            self._running.pop(request.request_id, None)
            chosen.release()
            await _close(events)

    def abort(self, request_id: str) -> None:
        client = self._running.get(request_id)
        if client is not None:
            client.abort(request_id)

    async def check_health(self) -> Health:
        candidates = self.gateway.candidates(self.alias)
        return Health(ok=bool(candidates), detail=f"{len(candidates)} deployments available")

    def stats(self) -> EngineStats:
        running = sum(self.gateway.in_flight.get(d.id, 0) for d in self.alias.deployments)
        return EngineStats(queue_depth=0, running=running, batch_size=0, tokens_per_s=0.0, kv_cache_bytes=0)


async def _close(events: AsyncIterator[EngineEvent]) -> None:
    closer = getattr(events, "aclose", None)
    if closer is not None:
        await closer()


def _tagged(event: StartEvent, deployment: Deployment) -> StartEvent:
    return StartEvent(event.request_id, event.prompt_tokens, event.max_tokens, backend=deployment.backend)
