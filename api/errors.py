"""One error shape for every failure: ``{"error": {"message", "type", "param", "code"}}``.

Domain errors, validation errors, unknown routes and unhandled exceptions all leave through here; clients never
see a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from api.services.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServiceError,
)
from engine.errors import (
    ContextTooLong,
    DownloadRefused,
    EngineBusy,
    EngineError,
    EngineStopped,
    InsufficientStorage,
    InvalidParameters,
    ModelInUse,
    ModelLoadFailed,
    NameTaken,
    NoModelLoaded,
    Overloaded,
    UnsupportedModel,
    UpstreamError,
    UpstreamRefused,
    UpstreamUnavailable,
)

log = logging.getLogger(__name__)

# (HTTP status, OpenAI-style error type) per domain error.
SERVICE_ERROR_STATUS: dict[type[ServiceError], tuple[int, str]] = {
    InvalidInput: (400, "invalid_request_error"),
    AuthenticationFailed: (401, "authentication_error"),
    PermissionDenied: (403, "permission_error"),
    NotFound: (404, "not_found_error"),
    Conflict: (409, "conflict_error"),
    RateLimited: (429, "rate_limit_error"),
}

STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def _mapped(exc: Exception, table: Mapping[type, tuple[int, str]], default: tuple[int, str]) -> tuple[int, str]:
    """(status, type) of the first class in ``table`` that ``exc`` is an instance of."""
    return next((mapped for cls, mapped in table.items() if isinstance(exc, cls)), default)


def error_body(message: str, *, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int, message: str, *, code: str | None = None, param: str | None = None,
    type_: str | None = None, headers: dict[str, str] | None = None,
) -> JSONResponse:
    kind = type_ or STATUS_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse(error_body(message, type_=kind, code=code, param=param), status_code=status,
                        headers=headers)


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    status, kind = _mapped(exc, SERVICE_ERROR_STATUS, (400, "invalid_request_error"))
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after_s)
        kind = exc.error_type or kind
    if isinstance(exc, AuthenticationFailed):
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(status, exc.message, code=exc.code, param=exc.param, type_=kind, headers=headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404 and exc.detail == "Not Found":
        message, code = f"no route for {request.method} {request.url.path}", "unknown_route"
    elif exc.status_code == 405:
        message, code = f"method {request.method} is not allowed on {request.url.path}", "method_not_allowed"
    elif exc.status_code == 413:
        message, code = str(exc.detail), "body_too_large"
    else:
        message, code = str(exc.detail), None
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return error_response(exc.status_code, message, code=code, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    # Starlette's 405 names the methods of the first route on the path only; each method here is a route of its own.
    # The resource is the first path template that matches, in routing order (/admin/runners/templates, not
    # /admin/runners/{runner_id}); its methods are those of every route with that template.
    path = request.url.path
    matching = [context for context in iter_route_contexts(request.app.routes)
                if context.path and compile_path(context.path)[0].match(path)]
    if not matching:
        return []
    return sorted({method for context in matching if context.path == matching[0].path
                   for method in getattr(context.original_route, "methods", None) or ()})


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": "invalid"}
    if first.get("type") == "json_invalid":
        return error_response(400, "request body is not valid JSON", code="invalid_json")
    if tuple(first.get("loc", ())) == ("body",):
        return error_response(400, "request body must be a JSON object sent as application/json",
                              code="invalid_json")
    param = _param_name(first.get("loc", ()))
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    code = "missing_field" if first.get("type") == "missing" else "invalid_value"
    if first.get("type") == "extra_forbidden":
        code, message = "unknown_field", f"{param}: unknown field"
    return error_response(400, message, code=code, param=param)


def _param_name(location: tuple[Any, ...] | list[Any]) -> str | None:
    # ("body", "messages", 0, "content") -> "messages[0].content"; the source ("body", "query") is implied.
    parts = list(location)
    if parts and parts[0] in {"body", "query", "path", "header", "cookie"}:
        parts = parts[1:]
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or None


ENGINE_ERROR_STATUS: dict[type[EngineError], tuple[int, str]] = {
    InvalidParameters: (400, "invalid_request_error"),
    NameTaken: (409, "conflict_error"),
    UpstreamUnavailable: (503, "server_error"),
    UpstreamError: (502, "server_error"),
    InsufficientStorage: (507, "server_error"),
    DownloadRefused: (400, "invalid_request_error"),
    ContextTooLong: (400, "invalid_request_error"),
    EngineBusy: (409, "conflict_error"),
    ModelInUse: (409, "conflict_error"),
    EngineStopped: (503, "server_error"),
    ModelLoadFailed: (500, "server_error"),
    UnsupportedModel: (400, "invalid_request_error"),
    Overloaded: (503, "server_error"),
    NoModelLoaded: (503, "server_error"),
}


async def _engine_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EngineError)
    status, kind = _mapped(exc, ENGINE_ERROR_STATUS, (500, "server_error"))
    if isinstance(exc, UpstreamRefused):  # the upstream's own 4xx, passed on as it said it
        status, kind = exc.status, STATUS_TYPES.get(exc.status, "invalid_request_error")
    body = error_body(exc.message, type_=kind, code=exc.code, param=exc.param)
    if isinstance(exc, ContextTooLong):
        body["error"] |= {"max_context": exc.max_context, "input_tokens": exc.input_tokens}
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Overloaded) else None
    return JSONResponse(body, status_code=status, headers=headers)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # Lost connections, a locked SQLite file, a failover: transient, so the client is told to retry.
    log.error("database error on %s %s: %s", request.method, request.url.path, type(exc).__name__, exc_info=exc)
    return error_response(503, "the database is unavailable or busy; try again shortly", code="database_unavailable",
                          type_="server_error", headers={"Retry-After": "1"})


# SQLSTATEs that mean "no usable connection" (connection exceptions, an administrator's or a crash shutdown, too
# many connections, a database not accepting connections): asyncpg reports some of them as a plain DBAPIError.
CONNECTION_SQLSTATES = ("08", "57P", "53300", "55000")


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
    if exc.connection_invalidated or (sqlstate and sqlstate.startswith(CONNECTION_SQLSTATES)):
        return await _database_unavailable(request, exc)
    if _out_of_range(exc):
        return await _unstorable_value(request, exc)
    return await _unhandled_error(request, exc)


def _out_of_range(exc: BaseException) -> bool:
    # asyncpg refuses an integer past 64 bits before PostgreSQL sees it (an OverflowError under its DataError),
    # and SQLAlchemy wraps that as a bare DBAPIError.
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OverflowError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


async def _unstorable_value(request: Request, exc: Exception) -> JSONResponse:
    # PostgreSQL refuses what SQLite takes: a NUL character in text, an integer past 32 bits; SQLite refuses an
    # integer past 64 bits.
    log.warning("unstorable value on %s %s: %s", request.method, request.url.path, exc)
    return error_response(400, "a value cannot be stored: it is out of range or holds a character that is not "
                          "allowed (such as NUL)", code="invalid_value")


async def _unhandled_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error", code="internal_error", type_="server_error")


HANDLERS: list[tuple[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]]] = [
    (ServiceError, _service_error),
    (EngineError, _engine_error),
    (StarletteHTTPException, _http_error),
    (RequestValidationError, _validation_error),
    (DataError, _unstorable_value),
    (OverflowError, _unstorable_value),  # SQLite's driver: an integer past 64 bits, unwrapped
    (OperationalError, _database_unavailable),
    (InterfaceError, _database_unavailable),
    (DBAPIError, _database_error),  # after its subclasses above: the first match answers in `response_for`
    (Exception, _unhandled_error),
]


def install_error_handlers(app: FastAPI) -> None:
    for exception, handler in HANDLERS:
        app.add_exception_handler(exception, handler)


async def response_for(request: Request, exc: Exception) -> JSONResponse:
    """What the installed handlers answer for ``exc``, for code that runs outside them (the gateway fast path)."""
    handler = next(handler for exception, handler in HANDLERS if isinstance(exc, exception))
    return await handler(request, exc)
