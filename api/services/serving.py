"""Serving one generation for a caller: the per-user cap on concurrent generations, limits, the backend, the first
event (refusals surface before any response is sent), usage metering, and stopping the engine's work when the
client goes away. Every protocol starts its generations here and ends them with ``Generation.close``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import State

from api import tracing
from api.services import limits
from api.services.backends import Backend
from api.services.errors import RateLimited
from api.services.generation_slots import GenerationSlots, Slot
from api.services.metering import Meter
from api.services.principal import Principal
from api.services.usage_writer import Reservation
from engine.errors import GenerationFailed, Overloaded
from engine.requests import EngineEvent, ErrorEvent, GenerationRequest, StartEvent


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
async def begin(state: State, session: AsyncSession | None, principal: Principal, model: str | None,
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
        backend = backend or state.backends.resolve(model, principal)
        route.set_attributes({"gen_ai.request.model": backend.model, "llmws.backend.kind": backend.kind})
    meter = Meter.for_principal(state.usage_writer, principal, generation.request_id, backend.model, backend.kind)
    slot = take_slots(state.generation_slots, principal, generation.sampling.n, meter)
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


T = TypeVar("T")


class ClientGone(Exception):  # noqa: N818 (an event, not an error: nobody is left to answer)
    """The client disconnected before its answer began."""


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result; if the client disconnects first, ``work`` is cancelled and `ClientGone` raised (an
    upstream that has not answered yet must not be kept waiting for nobody)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.create_task(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise ClientGone
    return task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


@contextlib.asynccontextmanager
async def abort_on_disconnect(request: Request, abort: Callable[[], None]) -> AsyncIterator[None]:
    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        abort()

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()
