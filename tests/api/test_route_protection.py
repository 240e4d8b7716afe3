"""Acceptance: every route but the public ones needs credentials, and every /admin route needs the admin role.

The routes are read from the app itself, so a route added later without auth fails here.
"""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from starlette.routing import Route

from tests.api.conftest import assert_error, bearer

PUBLIC_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/auth/login"),
    ("POST", "/auth/register"),
}
DOCS_PATHS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
# WebSocket routes authenticate in their first message; tests/api/test_websocket.py checks they refuse without it.
WEBSOCKET_PATHS = {"/v1/ws"}


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def api_routes(app: FastAPI) -> list[tuple[str, str]]:
    found = []
    # Routes of included routers, with their prefixes, as the app really serves them.
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            found += [(method, context.path) for method in sorted(context.methods or ())]
        elif isinstance(route, Route) and context.path in DOCS_PATHS:
            continue
        elif isinstance(route, APIWebSocketRoute) and context.path in WEBSOCKET_PATHS:
            continue
        else:
            raise AssertionError(f"{route!r} is of a kind this test does not check yet; teach it how")
    return found


async def test_the_app_has_routes_to_check(app: FastAPI) -> None:
    routes = api_routes(app)
    assert PUBLIC_ROUTES <= set(routes)
    assert any(path.startswith("/admin") for _, path in routes)


async def test_every_private_route_refuses_anonymous_callers(app: FastAPI, client: httpx.AsyncClient) -> None:
    checked = 0
    for method, path in api_routes(app):
        if (method, path) in PUBLIC_ROUTES:
            continue
        response = await client.request(method, concrete(path))
        assert_error(response, 401)
        assert response.headers.get("www-authenticate") == "Bearer", (method, path)
        checked += 1
    assert checked >= 10


async def test_public_routes_answer_without_credentials(client: httpx.AsyncClient) -> None:
    for method, path in PUBLIC_ROUTES:
        response = await client.request(method, path, json={} if method == "POST" else None)
        assert response.status_code != 401, (method, path, response.text)


async def test_every_admin_route_refuses_a_plain_user(
    app: FastAPI, client: httpx.AsyncClient, user_token: str, admin_token: str
) -> None:
    admin_routes = [(method, path) for method, path in api_routes(app) if path.startswith("/admin")]
    assert admin_routes
    for method, path in admin_routes:
        response = await client.request(method, concrete(path), headers=bearer(user_token))
        assert_error(response, 403, "admin_required")
        as_admin = await client.request(method, concrete(path), headers=bearer(admin_token))
        assert as_admin.status_code not in (401, 403), (method, path, as_admin.text)
