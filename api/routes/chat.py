"""The native chat: ``POST /v1/chat`` (JSON) and ``/v1/chat/stream`` (resumable SSE), saved into conversations.
The turn itself (prompt, trimming, sampling, results) is the chat core's (``api/services/chat``)."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse

from api import disconnects
from api.deps import CurrentPrincipal, SessionDep, current_principal
from api.lifespan import services_of
from api.schemas.chat import NativeChatRequest
from api.services.chat import conversation_turns, conversations, output, response_formats, serving, tool_offers
from api.services.chat import prompt_library as prompts
from api.services.chat.streams import StreamHub, parse_last_event_id
from api.services.chat.turn import Message, Sampling, TextPart
from api.services.errors import NotFound
from api.sse import sse_response

router = APIRouter(prefix="/v1/chat", tags=["chat"], dependencies=[Depends(current_principal)])

LastEventId = Annotated[str | None, Header(alias="Last-Event-ID")]


SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "max_tokens", "stop", "seed", "repetition_penalty",
                   "presence_penalty", "frequency_penalty")


def _sampling(body: NativeChatRequest) -> Sampling:
    """What the request itself set; the rest is the chat core's to default."""
    return Sampling.from_mapping({name: getattr(body, name) for name in SAMPLING_FIELDS
                                  if name in body.model_fields_set})


async def _start(body: NativeChatRequest, request: Request, principal: CurrentPrincipal, session: SessionDep
                 ) -> tuple[serving.Generation, uuid.UUID]:
    """Plan the turn (nothing written), start the generation (refusals raise here), then store the user's turn."""
    message, system_prompt = body.message, body.system_prompt
    if body.preset_id is not None:
        preset = await prompts.get_prompt(session, principal, body.preset_id)
        if message is not None:
            message = prompts.apply_template(preset.user_template, message)
        system_prompt = system_prompt or preset.content
    new = [Message(role="tool", parts=(TextPart(result.content),), tool_call_id=result.tool_call_id)
           for result in body.tool_results]
    if message is not None:
        new.append(Message.of("user", message))
    exchange = await conversations.plan_exchange(
        session, principal.user.id, new, conversation_id=body.conversation_id,
        project_id=body.project_id, system_prompt=system_prompt)
    options = tool_offers.options(body.tools, body.tool_choice, body.parallel_tool_calls,
                                  response_formats.read(body.response_format))
    generation, conversation = await conversation_turns.begin(
        services_of(request.app), session, principal, body.model, exchange, _sampling(body),
        request_id=f"chat-{uuid.uuid4().hex}", options=options)
    return generation, conversation.id


async def _save_reply(request: Request, conversation_id: uuid.UUID, text: str, generation: serving.Generation,
                      tool_calls: list[output.CallResult]) -> None:
    await conversation_turns.save_reply(services_of(request.app).sessionmaker, conversation_id, text, generation,
                                        tool_calls)


@router.post("")
async def chat(body: NativeChatRequest, request: Request, principal: CurrentPrincipal, session: SessionDep
               ) -> dict[str, Any]:
    started = time.perf_counter()
    generation, conversation_id = await _start(body, request, principal, session)
    choice = (await output.collect(generation, disconnects.abort_on_disconnect(request, generation.abort)))[0]
    await _save_reply(request, conversation_id, choice.text, generation, choice.tool_calls)
    return {
        "id": generation.request.request_id, "conversation_id": str(conversation_id),
        "model": generation.backend.model,
        "message": {"role": "assistant", "content": choice.text, **output.calls_of(choice.tool_calls)},
        "finish_reason": choice.finish_reason, "usage": output.usage(generation.meter),
        "metrics": {**output.metrics(generation.meter),
                    "latency_ms": round((time.perf_counter() - started) * 1000, 1)},
    }


@router.post("/stream")
async def chat_stream(body: NativeChatRequest, request: Request, principal: CurrentPrincipal, session: SessionDep,
                      last_event_id: LastEventId = None) -> StreamingResponse:
    """Start a generation and stream it; with ``Last-Event-ID``, resume that stream instead of starting anew."""
    hub: StreamHub = services_of(request.app).stream_hub
    if last_event_id:
        stream_id, seq = parse_last_event_id(last_event_id)
        await session.commit()  # one pool connection per request at a time: the stream opens its own
        return sse_response(await hub.follow(stream_id, principal.user.id, seq))
    generation, conversation_id = await _start(body, request, principal, session)

    async def on_finish(transcript: output.Transcript, finished: serving.Generation) -> None:
        await _save_reply(request, conversation_id, transcript.text, finished, transcript.tool_calls)

    try:
        run = await hub.launch(generation, user_id=principal.user.id, conversation_id=conversation_id,
                               on_finish=on_finish)
    except BaseException:
        await generation.close()
        raise
    return sse_response(hub.follow_run(run))


@router.get("/stream/{stream_id}")
async def resume_stream(stream_id: uuid.UUID, request: Request, principal: CurrentPrincipal, session: SessionDep,
                        last_event_id: LastEventId = None, after: int | None = None) -> StreamingResponse:
    """The rest of a stream after ``Last-Event-ID`` (or ``?after=<event number>``; from the start without)."""
    hub: StreamHub = services_of(request.app).stream_hub
    await session.commit()  # one pool connection per request at a time: the stream opens its own
    seq = parse_last_event_id(last_event_id, stream_id)[1] if last_event_id else max(after or 0, 0)
    return sse_response(await hub.follow(stream_id, principal.user.id, seq))


@router.post("/stream/{stream_id}/cancel")
async def cancel_stream(stream_id: uuid.UUID, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    hub: StreamHub = services_of(request.app).stream_hub
    if not await hub.cancel(stream_id, principal.user.id):
        raise NotFound("no such stream", param="stream_id", code="stream_not_found")
    return {"id": str(stream_id), "cancelled": True}
