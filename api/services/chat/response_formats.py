"""What a turn's output must match: OpenAI's ``response_format`` read from a request (OpenAI's endpoints, native
chat and the WebSocket take the same object), and the engine's ``Constraint`` made of it. Every constraint is
enforced by the engine's grammar (engine/constraints.py), ``strict`` or not; one it cannot compile is a 400
naming the field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from api.services.chat.turn import ResponseFormat
from api.services.errors import InvalidInput
from engine.requests import Constraint

TYPES = ("text", "json_object", "json_schema")


def read(value: Any, param: str = "response_format") -> ResponseFormat | None:
    """``{"type": "text" | "json_object"}`` or ``{"type": "json_schema", "json_schema": {"name", "schema",
    "strict"}}``; None when absent."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{param} must be an object", param=param)
    kind = value.get("type")
    if kind not in TYPES:
        raise InvalidInput(f"{param}.type must be one of {', '.join(TYPES)}", param=f"{param}.type")
    if kind != "json_schema":
        return ResponseFormat(kind, param=param)
    described = value.get("json_schema")
    if not isinstance(described, Mapping) or not isinstance(described.get("schema"), Mapping):
        raise InvalidInput(f"{param}.json_schema needs a 'schema' object", param=f"{param}.json_schema")
    return ResponseFormat("json_schema", described, param=param)


def json_schema(schema: Any, param: str) -> ResponseFormat:
    """A bare schema (vLLM's ``structured_outputs.json``): an object, or its JSON text."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError:
            raise InvalidInput(f"{param} must be a JSON schema", param=param) from None
    if not isinstance(schema, Mapping):
        raise InvalidInput(f"{param} must be a JSON schema (an object)", param=param)
    return ResponseFormat("json_schema", {"schema": schema}, param=param)


def constraint(response_format: ResponseFormat | None) -> Constraint | None:
    """The engine's constraint for a response format (None: free text)."""
    if response_format is None or response_format.type == "text":
        return None
    param = response_format.param
    if response_format.type == "json_schema":
        assert response_format.json_schema is not None
        return Constraint("json_schema", json.dumps(response_format.json_schema["schema"]), param)
    if response_format.type == "choice":
        return Constraint("choice", json.dumps(list(response_format.choices)), param)
    if response_format.type in ("regex", "grammar"):
        return Constraint(response_format.type, response_format.text or "", param)
    return Constraint("json_object", "", param)
