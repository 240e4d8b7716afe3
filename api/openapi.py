"""The OpenAPI document as the API really answers: its error responses and its non-JSON bodies.

FastAPI declares a 422 ``HTTPValidationError`` on every operation with input, but this API answers validation
errors with 400 in its one error shape (api/errors.py), and it never declares 401/403/404/409/413/429/503 at all.
Here each operation gets the error statuses it can return, each with the ``ErrorResponse`` schema, worked out from
what the route is: authenticated or admin-only, with a path parameter, with a body. Schema fuzzing
(`make fuzz`) holds every answer to this document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import _get_api_route_for_openapi, get_openapi
from fastapi.routing import RouteContext, iter_route_contexts
from pydantic import BaseModel

from api.deps import admin_principal, current_principal


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every failure: ``{"error": {"message", "type", "param", "code"}}`` (a too-long prompt adds ``max_context``
    and ``input_tokens`` to ``error``)."""

    error: ErrorDetail


ERROR_DESCRIPTIONS = {
    "400": "Invalid input: a malformed body, parameter or header, or a value the rules refuse",
    "401": "Missing, invalid, expired or revoked credentials",
    "403": "Not allowed: the admin role is needed, or the account is disabled",
    "404": "The resource, or one the request names, does not exist (or is not the caller's)",
    "409": "Conflicts with the current state (a name taken, the last admin, a model in use)",
    "413": "The request body is larger than the server accepts",
    "429": "A rate limit or the login throttle; `Retry-After` says when to try again",
    "500": "The model failed to load",
    "502": "The upstream provider answered with an error",
    "503": "The database, the engine or every upstream is unavailable or full; `Retry-After` when it is known",
}

# Bodies other than JSON, by (path, method): what the 200 may also carry (/metrics carries nothing else).
ONLY_CONTENT = {("/metrics", "get"): "text/plain"}
EXTRA_CONTENT = {
    ("/admin/usage", "get"): ["text/csv"],
    ("/v1/conversations/{conversation_id}/export", "get"): ["text/markdown"],
    ("/v1/chat/stream", "post"): ["text/event-stream"],
    ("/v1/chat/stream/{stream_id}", "get"): ["text/event-stream"],
    ("/v1/chat/completions", "post"): ["text/event-stream"],
    ("/v1/completions", "post"): ["text/event-stream"],
    # Forwarded from an alias's upstream as it answers (docs/gateway.md, "Endpoints beyond chat").
    ("/v1/responses", "post"): ["text/event-stream"],
    ("/v1/audio/transcriptions", "post"): ["text/plain", "text/event-stream"],
    ("/v1/audio/translations", "post"): ["text/plain", "text/event-stream"],
    ("/v1/audio/speech", "post"): ["audio/mpeg", "audio/opus", "audio/aac", "audio/flac", "audio/wav", "audio/pcm"],
}
# One server-sent event (docs/api.md: every event has an `id:`, an `event:` name and JSON `data:`).
SSE_EVENT = {"type": "object", "properties": {"id": {"type": "string"}, "event": {"type": "string"},
                                              "data": {"type": "string"}}}
# Routes that only the engine or the upstreams can fail in these ways.
ENGINE_ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/chat", "/v1/chat/stream", "/admin/engine/switch",
                 "/admin/providers/{provider_id}/test", "/v1/embeddings", "/v1/responses", "/v1/audio/speech",
                 "/v1/audio/transcriptions", "/v1/audio/translations", "/v1/images/generations", "/v1/moderations",
                 "/v1/rerank", "/v1/score", "/v1/responses/{response_id}", "/v1/responses/{response_id}/input_items",
                 "/v1/responses/{response_id}/cancel"}
BODY_METHODS = {"post", "put", "patch"}


def _calls(route: RouteContext) -> set[Any]:
    found, pending = set(), list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        found.add(dependant.call)
        pending.extend(dependant.dependencies)
    return found


def error_statuses(route: RouteContext, method: str, operation: dict[str, Any]) -> set[str]:
    """The error statuses an operation can answer with."""
    calls = _calls(route)
    has_input = bool(operation.get("parameters") or operation.get("requestBody"))
    statuses = {"503"}  # the database (or, on /readyz, any check) can always be down
    if has_input or "422" in operation.get("responses", {}):
        statuses.add("400")
    if current_principal in calls:
        statuses |= {"400", "401", "403", "429"}  # a malformed Authorization header is a 401; limits, a 429
    if admin_principal in calls:
        statuses.add("403")
    if "{" in route.path or method in BODY_METHODS:
        statuses.add("404")
    if method != "get" and current_principal in calls:
        statuses.add("409")
    if method in BODY_METHODS:
        statuses |= {"400", "413"}
    if route.path.startswith("/auth/"):
        statuses |= {"400", "401", "403", "409", "429"}  # bad credentials, closed registration, the login throttle
    if route.path in ENGINE_ROUTES:
        statuses |= {"500", "502"}
    return statuses


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, built once and cached like FastAPI's own."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorDetail"] = ErrorDetail.model_json_schema()
    components["ErrorResponse"] = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    components["ErrorResponse"].pop("$defs", None)
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    error_content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    for context in iter_route_contexts(app.routes):
        # The route as included (router prefixes and dependencies applied), as get_openapi itself sees it.
        route = _get_api_route_for_openapi(context)
        if route is None or not route.include_in_schema:
            continue
        for method in sorted(route.methods or ()):
            method = method.lower()
            operation = schema["paths"].get(route.path_format, {}).get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            statuses = error_statuses(route, method, operation)
            responses.pop("422", None)
            for status in sorted(statuses):
                responses.setdefault(status, {"description": ERROR_DESCRIPTIONS[status], "content": error_content})
            success = responses[next(code for code in responses if code.startswith("2"))]
            if (route.path_format, method) in ONLY_CONTENT:
                success["content"] = {ONLY_CONTENT[route.path_format, method]: {"schema": {"type": "string"}}}
            for media in EXTRA_CONTENT.get((route.path_format, method), []):
                schema_of = SSE_EVENT if media == "text/event-stream" else {"type": "string"}
                success.setdefault("content", {})[media] = {"schema": schema_of}
    app.openapi_schema = schema
    return schema
