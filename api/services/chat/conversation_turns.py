"""A turn of a conversation the server keeps, once for the native chat (``api/routes/chat.py``) and the WebSocket
(``api/ws/inference.py``): planned by ``conversations.plan_exchange`` without writing anything, the
generation begun by the chat core (its earlier turns trimmed to the context; a refusal raises and leaves nothing
behind, not even a new conversation), and only then the new turn stored; the reply saved when it has ended."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services.accounts.principal import Principal
from api.services.chat import conversations, serving
from api.services.chat.conversations import Exchange
from api.services.chat.generation import begin_in_conversation
from api.services.chat.output import CallResult
from api.services.chat.turn import Sampling, Turn
from db.models import Conversation

if TYPE_CHECKING:
    from api.lifespan import AppServices

OnStored = Callable[[Conversation], Awaitable[None]]


async def begin(services: AppServices, session: AsyncSession, principal: Principal, model: str | None,
                exchange: Exchange, request: Sampling, *, request_id: str, on_stored: OnStored | None = None,
                options: Turn = Turn()) -> tuple[serving.Generation, Conversation]:
    """Start the exchange's generation (with ``options``: tools, tool choice, response format), then store its turn
    and commit; ``on_stored`` writes what else goes into the same commit (the WebSocket's session row, linked to a
    conversation just created)."""
    generation = await begin_in_conversation(services, session, principal, model, exchange.prompt, request,
                                             request_id=request_id, options=options)
    # From here on the generation holds an engine slot and the user's generation slots: whatever fails must
    # still close it.
    try:
        conversation = await conversations.store_exchange(session, principal.user.id, exchange,
                                                          generation.backend.model)
        if on_stored is not None:
            await on_stored(conversation)
        await session.commit()  # the reply is saved by another session, possibly before the caller returns
    except BaseException:
        await generation.close()
        raise
    return generation, conversation


async def save_reply(sessionmaker: async_sessionmaker[AsyncSession], conversation_id: uuid.UUID, text: str,
                     generation: serving.Generation, tool_calls: Sequence[CallResult] = ()) -> None:
    meter = generation.meter
    await conversations.save_reply(sessionmaker, conversation_id, text, model=generation.backend.model,
                                   prompt_tokens=meter.prompt_tokens, completion_tokens=meter.completion_tokens,
                                   tool_calls=[call.openai() for call in tool_calls])
