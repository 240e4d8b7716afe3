"""A turn started on a backend behind the engine interface (the local engine, or an upstream the router reaches
through it): what the engine cannot do yet refused with a 400 naming the field, sampling resolved with its one
precedence, the turn made the engine's request, and the generation begun through ``serving``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from api.services.accounts.principal import Principal
from api.services.chat import response_formats, sampling, serving
from api.services.chat.prompt import Prompt, fitted, template_messages, with_system_prompt
from api.services.chat.sampling import AliasDefaults
from api.services.chat.turn import Message, Sampling, TextPart, Turn
from api.services.errors import InvalidInput
from api.services.gateway.backends import Backend
from api.services.usage.writer import Reservation
from engine.requests import GenerationRequest, SamplingParams

if TYPE_CHECKING:
    from api.lifespan import AppServices


def _unsupported(name: str, what: str | None = None) -> InvalidInput:
    return InvalidInput(f"{what or repr(name)} is not supported by this server yet", param=name,
                        code="unsupported_parameter")


def refuse_unsupported(turn: Turn) -> None:
    """What the engine cannot do yet is a 400 naming it, never silently ignored."""
    if turn.tools and turn.prompt is not None:
        raise _unsupported("tools", "tools on a plain completion")
    _refuse_unsupported_messages(turn.messages)


def _refuse_unsupported_messages(messages: Sequence[Message]) -> None:
    for i, message in enumerate(messages):
        if message.role == "tool" and not message.tool_call_id:
            raise InvalidInput("a tool result needs tool_call_id", param=f"messages[{i}].tool_call_id",
                               code="missing_field")
        if not message.parts and not message.tool_calls:
            raise InvalidInput("a message needs content", param=f"messages[{i}].content", code="missing_field")
        for j, part in enumerate(message.parts):
            if not isinstance(part, TextPart):
                raise _unsupported(f"messages[{i}].content[{j}]", f"a content part other than text ({part.kind})")


def engine_request(turn: Turn, params: SamplingParams, request_id: str) -> GenerationRequest:
    constraint = response_formats.constraint(turn.response_format)
    if turn.prompt is not None:
        return GenerationRequest(prompt=turn.prompt, sampling=params, request_id=request_id, constraint=constraint)
    tools = tuple({"type": "function", "function": {
        "name": tool.name, **({"description": tool.description} if tool.description else {}),
        "parameters": dict(tool.parameters or {"type": "object", "properties": {}})}} for tool in turn.tools)
    return GenerationRequest(messages=template_messages(turn.messages), sampling=params, request_id=request_id,
                             constraint=constraint, tools=tools, tool_choice=turn.tool_choice,
                             parallel_tool_calls=turn.parallel_tool_calls is not False)


async def begin(services: AppServices, session: AsyncSession | None, principal: Principal, model: str | None,
                turn: Turn, *, request_id: str, server: Sampling, alias: AliasDefaults | None = None,
                backend: Backend | None = None, admit: bool = True, reservation: Reservation | None = None
                ) -> serving.Generation:
    """Start ``turn`` (``serving.begin`` says what refusals raise and what each leaves in the usage log), with
    ``alias``'s defaults where it is served for one."""
    refuse_unsupported(turn)
    params = sampling.resolve(turn.sampling, alias=alias.sampling if alias else None, server=server)
    if turn.logprobs:  # not sampling (no alias or model sets it): the engine's count of alternatives per token
        params = replace(params, logprobs=turn.top_logprobs or 0)
    if alias is not None and alias.system_prompt and turn.prompt is None:
        turn = replace(turn, messages=with_system_prompt(turn.messages, alias.system_prompt))
    return await serving.begin(services, session, principal, model, engine_request(turn, params, request_id),
                               backend, admit=admit, reservation=reservation)


async def begin_in_conversation(services: AppServices, session: AsyncSession | None, principal: Principal,
                                model: str | None, prompt: Prompt, request: Sampling, *, request_id: str,
                                server: Sampling = sampling.NATIVE_DEFAULTS,
                                options: Turn = Turn()) -> serving.Generation:
    """A turn of a conversation the server keeps (native chat, the WebSocket): its earlier turns trimmed from the
    oldest end until the prompt fits the model's context. ``options`` holds what the turn asks besides its messages
    and sampling (tools, tool choice, response format)."""
    async def start(fitting: Prompt) -> serving.Generation:
        turn = replace(options, messages=fitting.messages, sampling=request)
        return await begin(services, session, principal, model, turn, request_id=request_id, server=server)

    return await fitted(prompt, start, services.model_host.local)
