"""Which deployment holds each stored response (the Responses API keeps a response upstream, and its follow-ups,
`previous_response_id` and `GET`/`DELETE /v1/responses/{id}`, must reach the same deployment), and whose it is.

Kept in this replica's memory, bounded (the oldest forgotten first): a decision, not an accident. The database
would share it across replicas, at the cost of a write on every response; behind several replicas, follow-ups
of a response made on another replica (or forgotten here) are routed as a new request would be (a
`previous_response_id`) or answered 404 (a `GET`/`DELETE`, which names no model to route by). Sticky sessions in
front of the replicas, or one replica for the Responses API, avoid that; docs/gateway.md says so.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

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
