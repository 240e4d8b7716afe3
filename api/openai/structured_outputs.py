"""The output constraint of an OpenAI body: ``response_format``, or the extensions vLLM users send through
``extra_body``: ``structured_outputs`` with one of ``json`` (a schema), ``regex``, ``choice``, ``grammar`` (Lark)
or ``json_object``, and the older top-level ``guided_json``, ``guided_regex``, ``guided_choice`` and
``guided_grammar``. At most one may be given; a field a turn cannot describe is refused naming it."""

from __future__ import annotations

from typing import Any

from api.openai.schemas import SamplingFields
from api.services.chat import response_formats
from api.services.chat.turn import ResponseFormat
from api.services.errors import InvalidInput

STRUCTURED_KEYS = ("json", "regex", "choice", "grammar", "json_object")
GUIDED = {"guided_json": "json", "guided_regex": "regex", "guided_choice": "choice", "guided_grammar": "grammar"}


def response_format(body: SamplingFields) -> ResponseFormat | None:
    given: list[ResponseFormat] = []
    if (value := getattr(body, "response_format", None)) is not None:
        read = response_formats.read(value)
        if read is not None and read.type != "text":
            given.append(read)
    if body.structured_outputs is not None:
        given.extend(_structured(body.structured_outputs))
    for name, key in GUIDED.items():
        if (value := getattr(body, name)) is not None:
            given.append(_one(key, value, name))
    if len(given) > 1:
        raise InvalidInput("give one output constraint: response_format, structured_outputs or a guided_* field",
                           param=given[1].param)
    return given[0] if given else None


def _structured(value: Any) -> list[ResponseFormat]:
    if not isinstance(value, dict):
        raise InvalidInput("structured_outputs must be an object", param="structured_outputs")
    for key in value:
        if key not in STRUCTURED_KEYS:
            raise InvalidInput(f"structured_outputs.{key} is not supported by this server; it takes "
                               f"{', '.join(STRUCTURED_KEYS)}", param=f"structured_outputs.{key}",
                               code="unsupported_parameter")
    return [_one(key, item, f"structured_outputs.{key}") for key, item in value.items()
            if item is not None and item is not False]


def _one(key: str, value: Any, param: str) -> ResponseFormat:
    if key == "json":
        return response_formats.json_schema(value, param)
    if key == "json_object":
        return ResponseFormat("json_object", param=param)
    if key == "choice":
        if not isinstance(value, list) or not value or not all(isinstance(item, str) and item for item in value):
            raise InvalidInput(f"{param} must be a non-empty list of non-empty strings", param=param)
        return ResponseFormat("choice", choices=tuple(value), param=param)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{param} must be a non-empty string", param=param)
    return ResponseFormat("regex" if key == "regex" else "grammar", text=value, param=param)
