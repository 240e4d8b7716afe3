"""The WebSocket's adapter to the chat core: one inference of a session is a turn of the session's conversation
(the core assembles its prompt, trimming the oldest turns to the model's context), and every result it produces
is emitted into the session (``api/services/ws_hub.py``).
Events carry our field names and the seed's (``tokens_in``, ``data``, ``total_tokens``, ``input_length``) side by
side, so the seed's clients read theirs (docs/websocket.md)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from api import tracing
from api.services import conversations
from api.services.auth import Principal
from api.services.chat import output
from api.services.chat.generation import begin_in_conversation
from api.services.chat.prompt import Prompt
from api.services.chat.turn import Message, Sampling
from api.services.errors import ServiceError
from api.services.ws_hub import LiveSession
from db.models import Message as StoredMessage
from db.models import User, WsSession
from engine.errors import ContextTooLong, EngineError
from engine.requests import SamplingParams

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
                        params: SamplingParams) -> None:
    """One turn of the session's conversation (the chat core assembles and trims its prompt), the exchange saved,
    every event emitted into the session."""
    request_id = ids.wire
    async with services.sessionmaker() as db:
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
        prompt = Prompt.assemble(system, await conversations.history_of(db, live.conversation_id),
                                 [Message.of(item["role"], item["content"]) for item in new_messages])  # type: ignore[arg-type]
        try:
            generation = await begin_in_conversation(services, db, principal, model, prompt, Sampling.exactly(params),
                                                     request_id=ids.engine)
        except ContextTooLong as exc:
            await live.emit({"type": "error", "request_id": request_id, "code": exc.code, "message": exc.message,
                             "max_context": exc.max_context, "input_tokens": exc.input_tokens,
                             "input_length": exc.input_tokens})
            return
        except (EngineError, ServiceError) as exc:
            await live.emit({"type": "error", "request_id": request_id, "code": exc.code, "message": exc.message})
            return
        # From here on the generation holds an engine slot and the user's generation slots: whatever fails (the
        # commit, an emit into a session whose client is gone) must still close it.
        try:
            for item in new_messages:
                db.add(StoredMessage(conversation_id=live.conversation_id, role=item["role"], content=item["content"]))
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
        async for result in output.results(generation):
            if isinstance(result, output.TextDelta):
                text.append(result.text)
                await live.emit({"type": "token", "request_id": request_id, "text": result.text,
                                 "data": result.text})
            elif isinstance(result, output.Finished):
                finish_reason = result.reason
            else:
                await live.emit({"type": "error", "request_id": request_id, "code": result.code,
                                 "message": result.message})
                return
    finally:
        await generation.close()
    meter, usage = generation.meter, output.usage(generation.meter)
    await live.emit({"type": "done", "request_id": request_id, "finish_reason": finish_reason,
                     "text": "".join(text), "total_tokens": meter.completion_tokens,
                     # The seed's shape: no total here (its top-level total_tokens counts generated tokens).
                     "usage": {"prompt_tokens": usage["prompt_tokens"],
                               "completion_tokens": usage["completion_tokens"]},
                     "metrics": output.metrics(meter)})
    await conversations.save_reply(services.sessionmaker, live.conversation_id, "".join(text),
                                   model=generation.backend.model, prompt_tokens=meter.prompt_tokens,
                                   completion_tokens=meter.completion_tokens)
