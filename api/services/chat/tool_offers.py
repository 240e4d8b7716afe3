"""The tools a request offers, read once for every protocol that takes OpenAI's shapes (the OpenAI endpoints,
native chat, the WebSocket): ``tools`` as ``[{type: "function", function: {name, description, parameters}}]``,
``tool_choice`` and ``parallel_tool_calls``. A malformed offer is a 400 naming the field; whether a named choice
is among the tools, and how the model is held to it, is the engine's (engine/tool_format.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from api.services.chat.turn import ResponseFormat, Tool, Turn
from api.services.errors import InvalidInput

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # OpenAI's rule for a function name
CHOICES = ("none", "auto", "required")


@dataclass(frozen=True)
class ToolOffer:
    tools: tuple[Tool, ...] = ()
    tool_choice: str | Mapping[str, Any] | None = None
    parallel_tool_calls: bool | None = None


def read(tools: Any, tool_choice: Any = None, parallel_tool_calls: Any = None) -> ToolOffer:
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise InvalidInput("tools must be a list", param="tools")
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise InvalidInput("parallel_tool_calls must be true or false", param="parallel_tool_calls")
    return ToolOffer(tuple(_tool(item, f"tools[{index}]") for index, item in enumerate(tools)),
                     _choice(tool_choice), parallel_tool_calls)


def options(tools: Any, tool_choice: Any = None, parallel_tool_calls: Any = None,
            response_format: ResponseFormat | None = None) -> Turn:
    """A turn's options: the tools offered, read as ``read`` does, and the response format; the caller adds the
    messages (or replaces them in, ``dataclasses.replace``) and the sampling."""
    offer = read(tools, tool_choice, parallel_tool_calls)
    return Turn(tools=offer.tools, tool_choice=offer.tool_choice, parallel_tool_calls=offer.parallel_tool_calls,
                response_format=response_format)


def _tool(item: Any, param: str) -> Tool:
    if not isinstance(item, Mapping):
        raise InvalidInput(f"{param} must be an object", param=param)
    if item.get("type", "function") != "function":
        raise InvalidInput(f"{param}.type {item.get('type')!r} is not supported by this server yet (only "
                           "'function')", param=f"{param}.type", code="unsupported_parameter")
    function = item.get("function")
    if not isinstance(function, Mapping):
        raise InvalidInput(f"{param}.function must be an object", param=f"{param}.function")
    name = function.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidInput(f"{param}.function.name must be 1 to 64 letters, digits, '_', '.' or '-'",
                           param=f"{param}.function.name")
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        raise InvalidInput(f"{param}.function.description must be a string", param=f"{param}.function.description")
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, Mapping):
        raise InvalidInput(f"{param}.function.parameters must be a JSON schema (an object)",
                           param=f"{param}.function.parameters")
    return Tool(name, description, parameters)


def _choice(value: Any) -> str | Mapping[str, Any] | None:
    if value is None or value in CHOICES:
        return value
    if isinstance(value, Mapping) and isinstance(value.get("function"), Mapping) and isinstance(
            value["function"].get("name"), str):
        return value
    raise InvalidInput("tool_choice must be 'none', 'auto', 'required' or {type: 'function', function: {name}}",
                       param="tool_choice")
