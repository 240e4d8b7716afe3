"""Which deployment holds each stored response, and whose it is (the Responses API keeps a response upstream, and
its follow-ups, `previous_response_id` and `GET`/`DELETE /v1/responses/{id}`, must reach the same deployment);
and those reads and deletes, sent there.

Kept in this replica's memory, bounded (the oldest forgotten first): a decision, not an accident. The database
would share it across replicas, at the cost of a write on every response; behind several replicas, follow-ups
of a response made on another replica (or forgotten here) are routed as a new request would be (a
`previous_response_id`) or answered 404 (a `GET`/`DELETE`, which names no model to route by). Sticky sessions in
front of the replicas, or one replica for the Responses API, avoid that; docs/gateway.md says so.
"""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from dataclasses import dataclass

import httpx
from fastapi.responses import Response

from api.services.accounts.principal import Principal
from api.services.errors import NotFound
from api.services.gateway.gateway import Gateway
from engine.errors import UpstreamUnavailable

# At about 200 bytes an entry, some 20 MB: days of responses for a busy replica.
MAX_ROUTES = 100_000


@dataclass(frozen=True)
class ResponseRoute:
    user_id: int
    alias: str
    deployment_id: int


class ResponseRoutes:
    def __init__(self, capacity: int = MAX_ROUTES) -> None:
        self.capacity = capacity
        self._routes: OrderedDict[str, ResponseRoute] = OrderedDict()

    def remember(self, response_id: str, route: ResponseRoute) -> None:
        self._routes[response_id] = route
        self._routes.move_to_end(response_id)
        while len(self._routes) > self.capacity:
            self._routes.popitem(last=False)

    def find(self, response_id: str, user_id: int) -> ResponseRoute | None:
        """The route of the caller's own response; another user's is as unknown as one never made."""
        route = self._routes.get(response_id)
        return route if route is not None and route.user_id == user_id else None

    def forget(self, response_id: str) -> None:
        self._routes.pop(response_id, None)


async def stored_response(gateway: Gateway, routes: ResponseRoutes, principal: Principal, response_id: str,
                          method: str, suffix: str = "", query: str = "") -> Response:
    """A stored response's `GET`, `DELETE`, `/input_items` or `/cancel`, from the deployment that made it, as
    the upstream answers it (the alias for its model); unmetered: nothing is generated."""
    route = routes.find(response_id, principal.user.id)
    alias = gateway.alias(route.alias, principal) if route is not None else None
    deployment = next((d for d in alias.deployments if d.id == route.deployment_id and d.provider is not None),
                      None) if alias is not None and route is not None else None
    if alias is None or deployment is None or deployment.provider is None:
        raise NotFound(f"no response '{response_id}' was made through this server (or it was forgotten)",
                       param="response_id", code="response_not_found")
    response = await deployment.provider.upstream.send(method, f"/responses/{response_id}{suffix}", query=query)
    try:
        body = await response.aread()
    except httpx.HTTPError as exc:
        raise UpstreamUnavailable(f"{deployment.provider.name} failed: {type(exc).__name__}") from exc
    finally:
        await response.aclose()
    media = response.headers.get("content-type", "application/json")
    if media.startswith("application/json"):
        with contextlib.suppress(ValueError):
            payload = json.loads(body)
            holder = payload.get("response", payload) if isinstance(payload, dict) else None
            if isinstance(holder, dict) and isinstance(holder.get("model"), str):
                holder["model"] = alias.name
                body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    if method == "DELETE":
        routes.forget(response_id)
    return Response(body, status_code=response.status_code, media_type=media)
