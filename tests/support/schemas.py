"""The five JSON schemas the structured-output tests sample against (issue 17, acceptance 1): nested objects,
arrays, enums, integers with bounds and optional fields. Strings and arrays are bounded, as OpenAI's strict mode
would have them closed: a random-weight model under the grammar then always finishes within ``MAX_TOKENS``."""

from __future__ import annotations

from typing import Any

MAX_TOKENS = 160  # enough for the largest answer these schemas allow, in the demo tokenizer's tokens

NAME = {"type": "string", "maxLength": 10}

SCHEMAS: dict[str, dict[str, Any]] = {
    "nested_objects": {
        "type": "object",
        "properties": {
            "user": {"type": "object", "properties": {
                "name": NAME,
                "address": {"type": "object", "properties": {"city": NAME, "zip": NAME},
                            "required": ["city", "zip"], "additionalProperties": False},
            }, "required": ["name", "address"], "additionalProperties": False},
        },
        "required": ["user"], "additionalProperties": False,
    },
    "arrays": {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": NAME, "minItems": 1, "maxItems": 3},
            "scores": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 100}, "maxItems": 4},
        },
        "required": ["tags", "scores"], "additionalProperties": False,
    },
    "enums": {
        "type": "object",
        "properties": {
            "colour": {"enum": ["red", "green", "blue"]},
            "size": {"type": "string", "enum": ["S", "M", "L", "XL"]},
            "ok": {"type": "boolean"},
        },
        "required": ["colour", "size", "ok"], "additionalProperties": False,
    },
    "bounded_integers": {
        "type": "object",
        "properties": {
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
            "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
            "delta": {"type": "integer", "minimum": -5, "maximum": 5},
        },
        "required": ["age", "year", "delta"], "additionalProperties": False,
    },
    "optional_fields": {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 1, "maximum": 1000},
            "nickname": NAME,
            "vip": {"type": "boolean"},
        },
        "required": ["id"], "additionalProperties": False,
    },
}

# What the library refuses: an unknown type.
BROKEN_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "integr"}}}


# The two tools the tool-call tests offer (tests/engine/test_tool_calls.py, tests/api/test_tools.py): their
# arguments are bounded the same way, so every call a grammar forces ends within a few dozen tokens.
WEATHER_ARGUMENTS: dict[str, Any] = {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"], "additionalProperties": False}
SUM_ARGUMENTS: dict[str, Any] = {
    "type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                     "b": {"type": "integer", "minimum": 0, "maximum": 99}},
    "required": ["a", "b"], "additionalProperties": False}
TOOLS: tuple[dict[str, Any], ...] = (
    {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                      "parameters": WEATHER_ARGUMENTS}},
    {"type": "function", "function": {"name": "add", "description": "Add two numbers",
                                      "parameters": SUM_ARGUMENTS}})
TOOL_SCHEMAS: dict[str, dict[str, Any]] = {"get_weather": WEATHER_ARGUMENTS, "add": SUM_ARGUMENTS}
