"""The WebSocket's adapter to the chat core: one inference of a session is a turn of the session's conversation,
planned, begun and stored as the native chat's (``conversation_turns``: the same system prompt precedence, the
oldest turns trimmed to the model's context, nothing written when the generation is refused), and every result it
produces is emitted into the session (``api/ws/hub.py``).
Events carry our field names and the seed's (``tokens_in``, ``data``, ``total_tokens``, ``input_length``) side by
side, so the seed's clients read theirs (docs/websocket.md)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from api import tracing
from api.services.accounts.principal import Principal
from api.services.chat import conversation_turns, conversations, output
from api.services.chat.turn import Message, Sampling, TextPart, Turn
from api.services.errors import NotFound, ServiceError
from api.ws.hub import LiveSession
from db.models import Conversation, User, WsSession
from engine.errors import ContextTooLong, EngineError

if TYPE_CHECKING:
    from api.lifespan import AppServices


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
async def run_inference(services: AppServices, live: LiveSession, user_id: int, key_id: int | None, ids: RequestIds,
                        model: str | None, system: str | None, new_messages: list[dict[str, str]],
                        request: Sampling, options: Turn = Turn()) -> None:
    """One turn of the session's conversation, planned, begun and stored as the native chat's are
    (``conversation_turns``), every event emitted into the session, the reply saved."""
    request_id = ids.wire
    async with services.sessionmaker() as db:
        user = await db.get(User, user_id)
        if user is None or not user.is_active:
            await live.emit({"type": "error", "request_id": request_id, "code": "account_disabled",
                             "message": "this account is disabled"})
            return
        principal = Principal(user=user, api_key_id=key_id)

        async def link(conversation: Conversation) -> None:
            """A conversation just created becomes the session's, in the commit that stores its first turn."""
            if conversation.id != live.conversation_id:
                row = await db.get(WsSession, live.id)
                if row is not None:
                    row.conversation_id = conversation.id

        try:
            exchange = await _plan(db, user_id, live, system, new_messages)
            generation, conversation = await conversation_turns.begin(
                services, db, principal, model, exchange, request, request_id=ids.engine, on_stored=link,
                options=options)
        except ContextTooLong as exc:
            await live.emit({"type": "error", "request_id": request_id, "code": exc.code, "message": exc.message,
                             "max_context": exc.max_context, "input_tokens": exc.input_tokens,
                             "input_length": exc.input_tokens})
            return
        except (EngineError, ServiceError) as exc:
            await live.emit({"type": "error", "request_id": request_id, "code": exc.code, "message": exc.message})
            return
    live.conversation_id = conversation.id
    transcript = output.Transcript()
    try:
        start = output.start(generation)
        await live.emit({"type": "start", "request_id": request_id, **start, "tokens_in": start["input_tokens"]})
        live.current_abort = generation.abort
        async for result in output.results(generation):
            transcript.record(result)
            if isinstance(result, output.TextDelta):
                await live.emit({"type": "token", "request_id": request_id, "text": result.text,
                                 "data": result.text})
            elif isinstance(result, output.ToolCallPiece):
                await live.emit({"type": "tool_call", "request_id": request_id, **output.tool_call_event(result)})
            elif isinstance(result, output.Failed):
                await live.emit({"type": "error", "request_id": request_id, "code": result.code,
                                 "message": result.message})
                return
    finally:
        await generation.close()
    meter, usage = generation.meter, output.usage(generation.meter)
    await live.emit({"type": "done", "request_id": request_id, "finish_reason": transcript.finish_reason,
                     "text": transcript.text, "total_tokens": meter.completion_tokens,
                     # The seed's shape: no total here (its top-level total_tokens counts generated tokens).
                     "usage": {"prompt_tokens": usage["prompt_tokens"],
                               "completion_tokens": usage["completion_tokens"]},
                     "metrics": output.metrics(meter), **output.calls_of(transcript.tool_calls)})
    await conversation_turns.save_reply(services.sessionmaker, conversation.id, transcript.text, generation,
                                        transcript.tool_calls)


async def _plan(db: AsyncSession, user_id: int, live: LiveSession, system: str | None,
                new_messages: list[dict[str, str]]) -> conversations.Exchange:
    """The turn in the session's conversation, with the system prompt's precedence of the native chat (the
    message's or the session config's, else the conversation's, else its project's)."""
    new = [Message(item["role"], (TextPart(item["content"]),), tool_call_id=item.get("tool_call_id"))  # type: ignore[arg-type]
           for item in new_messages]
    try:
        return await conversations.plan_exchange(db, user_id, new, conversation_id=live.conversation_id,
                                                 project_id=None, system_prompt=system)
    except NotFound as exc:
        if live.conversation_id is None or exc.code != "conversation_not_found":
            raise
    # The session's conversation was deleted meanwhile: the session goes on in a new one.
    return await conversations.plan_exchange(db, user_id, new, conversation_id=None, project_id=None,
                                             system_prompt=system)
