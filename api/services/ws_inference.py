"""One inference of a WebSocket session: a turn of the session's conversation, with the earlier turns that fit the
model's context in its prompt, and every event it produces emitted into the session (``api/services/ws_hub.py``).
Events carry our field names and the seed's (``tokens_in``, ``data``, ``total_tokens``, ``input_length``) side by
side, so the seed's clients read theirs (docs/websocket.md)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from starlette.datastructures import State

from api import tracing
from api.services import conversations, serving
from api.services.auth import Principal
from api.services.errors import ServiceError
from api.services.ws_hub import LiveSession
from db.models import Message, User, WsSession
from engine.errors import ContextTooLong, EngineError
from engine.requests import ErrorEvent, FinishEvent, GenerationRequest, SamplingParams, TokenEvent


@dataclass(frozen=True)
class RequestIds:
    """An inference's two ids: ``wire``, the one its events carry (the client's own, when it chose one), and
    ``engine``, the server's unique one that the engine, the router and the usage log see."""

    wire: str
    engine: str

    @classmethod
    def for_client(cls, client_id: str | None) -> RequestIds:
        engine = f"ws-{uuid.uuid4().hex}"
        return cls(wire=client_id or engine, engine=engine)


@tracing.traced_ws_inference
async def run_inference(state: State, live: LiveSession, user_id: int, key_id: int | None, ids: RequestIds,
                        model: str | None, system: str | None, new_messages: list[dict[str, str]],
                        params: SamplingParams) -> None:
    """One turn of the session's conversation: earlier turns in the prompt (the oldest dropped first when it does
    not fit the context), the exchange saved, every event emitted into the session. Events carry our field names
    and the seed's (``tokens_in``, ``data``, ``total_tokens``, ``input_length``) side by side."""
    request_id = ids.wire
    async with state.sessionmaker() as db:
        user = await db.get(User, user_id)
        if user is None or not user.is_active:
            await live.emit({"type": "error", "request_id": request_id, "code": "account_disabled",
                             "message": "this account is disabled"})
            return
        principal = Principal(user=user, api_key_id=key_id)
        if live.conversation_id is None:
            conversation = await conversations.create_conversation(
                db, user_id, title=conversations.title_from(new_messages[-1]["content"]), system_prompt=system)
            row = await db.get(WsSession, live.id)
            if row is not None:
                row.conversation_id = conversation.id
            await db.commit()
            live.conversation_id = conversation.id
        history = [{"role": m.role, "content": m.content}
                   for m in await conversations.messages_of(db, live.conversation_id)]
        head = [{"role": "system", "content": system}] if system else []
        costs: list[float] | None = None  # each history message's tokens, counted once
        while True:
            try:
                generation = await serving.begin(state, db, principal, model, GenerationRequest(
                    messages=head + history + new_messages, sampling=params, request_id=ids.engine))
                break
            except ContextTooLong as exc:
                if not history:
                    await live.emit({"type": "error", "request_id": request_id, "code": exc.code,
                                     "message": exc.message, "max_context": exc.max_context,
                                     "input_tokens": exc.input_tokens, "input_length": exc.input_tokens})
                    return
                if costs is None:
                    costs = await history_costs(state, head, history, new_messages, exc.input_tokens)
                drop = oldest_to_drop(costs, exc.input_tokens - (exc.max_context - 1))
                history, costs = history[drop:], costs[drop:]
            except (EngineError, ServiceError) as exc:
                await live.emit({"type": "error", "request_id": request_id, "code": exc.code, "message": exc.message})
                return
        # From here on the generation holds an engine slot and the user's generation slots: whatever fails (the
        # commit, an emit into a session whose client is gone) must still close it.
        try:
            for item in new_messages:
                db.add(Message(conversation_id=live.conversation_id, role=item["role"], content=item["content"]))
            await db.commit()
        except BaseException:
            await generation.close()
            raise
    text: list[str] = []
    finish_reason = "cancelled"
    try:
        prompt_tokens = generation.start.prompt_tokens
        await live.emit({"type": "start", "request_id": request_id, "model": generation.backend.model,
                         "input_tokens": prompt_tokens, "tokens_in": prompt_tokens,
                         "max_tokens": generation.start.max_tokens})
        live.current_abort = generation.abort
        async for event in generation.events:
            generation.meter.observe(event)
            if isinstance(event, TokenEvent) and event.text:
                text.append(event.text)
                await live.emit({"type": "token", "request_id": request_id, "text": event.text, "data": event.text})
            elif isinstance(event, FinishEvent):
                finish_reason = event.finish_reason
            elif isinstance(event, ErrorEvent):
                await live.emit({"type": "error", "request_id": request_id, "code": event.code,
                                 "message": event.message})
                return
    finally:
        await generation.close()
    meter = generation.meter
    ttft = meter.ttft_s
    await live.emit({"type": "done", "request_id": request_id, "finish_reason": finish_reason,
                     "text": "".join(text), "total_tokens": meter.completion_tokens,
                     "usage": {"prompt_tokens": meter.prompt_tokens, "completion_tokens": meter.completion_tokens},
                     "metrics": {"ttft_ms": None if ttft is None else round(ttft * 1000, 1),
                                 "tokens_per_s": meter.tokens_per_s()}})
    await conversations.save_reply(state.sessionmaker, live.conversation_id, "".join(text),
                                   model=generation.backend.model, prompt_tokens=meter.prompt_tokens,
                                   completion_tokens=meter.completion_tokens)


async def history_costs(state: State, head: list[dict[str, str]], history: list[dict[str, str]],
                        new_messages: list[dict[str, str]], prompt_tokens: int) -> list[float]:
    """What each earlier message adds to the prompt, in tokens: its text counted once, plus its share of the role
    markers around it (what the whole prompt has beyond the new turn and the texts, spread evenly). Counting
    once keeps trimming linear in the history's length; re-tokenizing the prompt per dropped exchange was not."""
    local = state.model_host.local
    if local is None:  # the model went away meanwhile: nothing to count with, so the history goes
        return [0.0] * len(history)
    counts = await asyncio.to_thread(local.count_tokens, [m["content"] for m in history])
    new_turn = len(await asyncio.to_thread(local.encode_messages, head + new_messages))
    markers = max(0, prompt_tokens - new_turn - sum(counts)) / len(history)
    return [count + markers for count in counts]


def oldest_to_drop(costs: list[float], excess: int) -> int:
    """How many of the oldest messages to drop, whole exchanges (two) at a time, for at least ``excess`` tokens
    to go (at least one exchange: the prompt did not fit)."""
    dropped, freed = 0, 0.0
    while dropped < len(costs) and (dropped == 0 or freed < excess):
        freed += sum(costs[dropped:dropped + 2])
        dropped += 2
    return min(dropped, len(costs))
