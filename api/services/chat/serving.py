"""Serving one generation for a caller: the per-user cap on concurrent generations, limits, the backend, the first
event (refusals surface before any response is sent) and usage metering. Every protocol starts its generations here
and ends them with ``Generation.close`` (`api/disconnects.py` stops them when an HTTP client goes away)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from api import tracing
from api.services.accounts.principal import Principal
from api.services.errors import RateLimited
from api.services.gateway.backends import Backend
from api.services.usage import limits
from api.services.usage.generation_slots import GenerationSlots, Slot
from api.services.usage.metering import Meter
from api.services.usage.writer import Reservation
from engine.errors import GenerationFailed, Overloaded
from engine.requests import EngineEvent, ErrorEvent, GenerationRequest, StartEvent

if TYPE_CHECKING:
    from api.lifespan import AppServices


@dataclass
class Generation:
    backend: Backend
    request: GenerationRequest
    meter: Meter
    start: StartEvent
    events: AsyncIterator[EngineEvent]  # what follows the start event
    slot: Slot  # the user's slots, held until close

    def abort(self) -> None:
        self.backend.client.abort(self.request.request_id)

    async def stop(self) -> None:
        """Stop the engine's work if it is still running."""
        closer = getattr(self.events, "aclose", None)
        if closer is not None:
            await closer()  # an unfinished stream aborts its request in the engine

    async def close(self) -> None:
        """Stop the engine's work if it is still running, record usage and give the user's slots back (each
        once: a stream's own cleanup and the response's background task may both call this)."""
        try:
            await self.stop()
            self.meter.record(None if self.finished else "cancelled")
        finally:
            self.slot.release()

    @property
    def finished(self) -> bool:
        return len(self.meter.finish_reasons) >= self.request.sampling.n or self.meter.error is not None


@tracing.traced_generation
async def begin(services: AppServices, session: AsyncSession | None, principal: Principal, model: str | None,
                generation: GenerationRequest, backend: Backend | None = None, *, admit: bool = True,
                reservation: Reservation | None = None) -> Generation:
    """Take the user's slots, start the generation on its backend, then count it against the caller's limits; a
    refusal raises before anything is streamed. Refusals for what was asked (bad parameters, a prompt too long, an
    unknown model) write nothing and use up no limit; too many generations at once, a full engine queue or a limit
    leave a usage row with status ``rejected``. ``admit`` False: counted already (an alias that failed over to
    here, with that count's ``reservation``), or the caller has no limits (the gateway's fast path).

    The limits are counted in the request's own session, which is committed here: a request then holds no
    database connection while it generates (two at once per request would exhaust the pool under load)."""
    with tracing.step("llmws.route") as route:
        backend = backend or services.backends.resolve(model, principal)
        route.set_attributes({"gen_ai.request.model": backend.model, "llmws.backend.kind": backend.kind})
    meter = Meter.for_principal(services.usage_writer, principal, generation.request_id, backend.model, backend.kind)
    slot = take_slots(services.generation_slots, principal, generation.sampling.n, meter)
    try:
        started = await _start(backend, generation, meter, slot)
    except BaseException:
        slot.release()
        raise
    try:
        if admit and session is not None:
            meter.reservation = await limits.admit(session, principal, choices=generation.sampling.n,
                                                   reserve_tokens=started.start.prompt_tokens
                                                   + started.start.max_tokens * generation.sampling.n)
        else:
            meter.reservation = reservation
    except BaseException as exc:
        meter.prompt_tokens, meter.completion = 0, {}  # refused: nothing was served, nothing is billed
        meter.record("rejected" if isinstance(exc, RateLimited) else "error")
        await started.close()
        raise
    return started


def take_slots(slots: GenerationSlots, principal: Principal, choices: int, meter: Meter) -> Slot:
    """The user's slots for ``choices`` generations; a refusal is recorded as a rejected request."""
    try:
        return slots.take(principal.user.id, choices)
    except RateLimited:
        meter.record("rejected")
        raise


async def _start(backend: Backend, generation: GenerationRequest, meter: Meter, slot: Slot) -> Generation:
    events = backend.client.generate(generation)
    try:
        with tracing.backend_call(backend.kind):
            first = await anext(aiter(events))
    except Overloaded:
        meter.record("rejected")
        raise
    meter.observe(first)
    if not isinstance(first, StartEvent):
        meter.record("error")
        message = first.message if isinstance(first, ErrorEvent) else "the backend did not start the request"
        raise GenerationFailed(message)
    return Generation(backend, generation, meter, first, events, slot)
