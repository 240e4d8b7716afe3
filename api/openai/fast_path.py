"""The gateway's fast path: OpenAI requests for an alias, served without the router's machinery.

A request qualifies only when everything the normal route would check is already settled here: its credential is
in the principal cache (checked within `LLMWS_AUTH_CACHE_TTL`, forgotten at once on any change), neither the user
nor the key has limits to count, the model is an alias the caller may use, and the body's fields LLMWS reads
validate against the route's own model. It then goes to the same service as the route (`openai_endpoints.serve`),
with no dependency graph and no database session. Anything else (a cache miss, limits, another model, a body that
does not validate) goes down the normal path unchanged, which answers it exactly as before. Profiling put
FastAPI's routing and dependencies at ~12% and a per-request database session at ~5% of the gateway's time.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import response_for
from api.lifespan import services_of
from api.openai import endpoints as openai_endpoints
from api.openai.forwarding import Endpoint
from api.openai.schemas import ChatCompletionFields, CompletionFields
from api.services.accounts.credentials import credential_hash
from api.services.accounts.principal import Principal
from api.services.errors import ServiceError
from api.services.usage import limits

ROUTES: dict[str, tuple[type[BaseModel], Endpoint]] = {
    "/v1/chat/completions": (ChatCompletionFields, openai_endpoints.CHAT),
    "/v1/completions": (CompletionFields, openai_endpoints.COMPLETIONS),
}


class GatewayFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = ROUTES.get(scope.get("path", "")) if scope["type"] == "http" and scope["method"] == "POST" else None
        principal = self._cached_principal(scope) if route else None
        if route is None or principal is None:
            await self.app(scope, receive, send)
            return
        body, replay = await _read_body(receive)
        served = await self._serve(scope, replay, send, body, principal, *route)
        if not served:
            await self.app(scope, replay, send)

    def _cached_principal(self, scope: Scope) -> Principal | None:
        header = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        principal = services_of(scope["app"]).principal_cache.get(credential_hash(token.strip()))
        if principal is None or limits.has_limits(principal):
            return None
        return principal

    async def _serve(self, scope: Scope, receive: Receive, send: Send, body: bytes, principal: Principal,
                     schema: type[BaseModel], endpoint: Endpoint) -> bool:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes: the route answers
            return False
        if not isinstance(data, dict):
            return False
        try:
            if services_of(scope["app"]).gateway.alias(data.get("model"), principal) is None:
                return False
            schema.model_validate(data)
        except (ValidationError, ServiceError):  # a bad field, an alias not for this caller: the route answers
            return False
        scope["route"] = SimpleNamespace(path=scope["path"])  # the metrics' label, as the router would set it
        scope.setdefault("state", {})["principal"] = principal
        request = Request(scope, receive)
        try:
            response = await openai_endpoints.serve(request, None, principal, endpoint, data)
        except Exception as exc:  # noqa: BLE001 (answered in the API's error shape, as the route's handlers do)
            response = await response_for(request, exc)
        if isinstance(response, dict):  # an alias on the local engine answers a plain dict
            response = JSONResponse(response)
        await response(scope, receive, send)
        return True


async def _read_body(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body, and a receive that hands it over again (then passes on whatever comes next)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay
