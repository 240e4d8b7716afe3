"""Acceptance: the access matrix. Every route of the app × {anonymous, user, other user, admin, revoked API key,
expired token}, each route's expected access declared once in ``ACCESS``.

The routes are read from the app itself: a route added without an entry in ``ACCESS`` fails here, and so does an
entry whose route is gone. "Other user" creates the resource as user A and tries it as user B: someone else's
conversation, project, personal prompt, key or native stream is answered as if it did not exist (404), lists and
usage never show it, and a body that names it (continue A's conversation, file into A's project) is refused the
same way. The WebSocket message types get the same treatment in tests/api/test_ws_access.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from starlette.routing import Route

from api.services.gateway.backends import Backend
from api.settings import Settings
from bench.fake_openai_endpoints import FakeEndpointsUpstream
from db.models import Role
from tests.api.conftest import MakeUser, assert_error
from tests.support.access import USER_PASSWORD, bearer, login
from tests.support.access_matrix import MODEL, Access, echo_backends, echo_settings, expired_token, revoked_key

DOCS_PATHS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
# WebSocket routes authenticate in their first message: tests/api/test_ws_access.py has their matrix.
WEBSOCKET_PATHS = {"/v1/ws"}
INTRUDER = "intruder-was-here"


@dataclass
class Call:
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    files: dict[str, Any] | None = None  # a multipart upload instead of JSON


class World:
    """User A's resources, made on demand through the API and kept for the route being checked (so B's attempt
    and A's own use hit the same one)."""

    def __init__(self, client: httpx.AsyncClient, owner_token: str) -> None:
        self.client, self.owner = client, bearer(owner_token)
        self.made: dict[str, Any] = {}
        self.owner_usage_group: str | None = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post(path, json=body, headers=self.owner)
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def get(self, kind: str) -> Any:
        if kind not in self.made:
            self.made[kind] = await self._make(kind)
        return self.made[kind]

    async def _make(self, kind: str) -> Any:
        if kind == "project":
            return (await self._post("/v1/projects", {"name": "A's project", "system_prompt": "secret"}))["id"]
        if kind == "conversation":  # with one exchange in it, so there is a last exchange to take back
            return (await self._post("/v1/chat", {"message": "A's question", "model": MODEL}))["conversation_id"]
        if kind == "prompt":
            return (await self._post("/v1/prompts", {"name": "A's prompt", "content": "A's secret"}))["id"]
        if kind == "key":
            return (await self._post("/v1/keys", {"name": "A's key"}))["id"]
        if kind == "response":  # stored upstream, through the alias (the follow-up routes' resource)
            return (await self._post("/v1/responses", {"model": ALIAS, "input": "A's question"}))["id"]
        if kind == "stream":
            response = await self.client.post("/v1/chat/stream", json={"message": "hi", "model": MODEL},
                                              headers=self.owner)
            assert response.status_code == 200, response.text
            first = next(line for line in response.text.splitlines() if line.startswith("id: "))
            return first.removeprefix("id: ").rpartition(":")[0]
        raise AssertionError(kind)

    def new_route(self) -> None:
        self.made.clear()


Build = Callable[[World, str], Awaitable[Call]]
ListCheck = Callable[[World, httpx.Response], Awaitable[None]]


@dataclass(frozen=True)
class Rule:
    access: Access
    build: Build | None = None  # the request an allowed caller makes (``marker`` goes into what it writes)
    refused: tuple[int, str | None] = (404, None)  # what another user gets (OWNER)
    list_check: ListCheck | None = None  # OWN_LIST: A's rows are not in B's answer
    fresh_login: bool = False  # the call ends the caller's login (logout, password): each column logs in anew
    extra: dict[str, Any] = field(default_factory=dict)


def path(template: str, **kinds: str) -> Build:
    """A call to ``template`` with A's resources in its placeholders (``{project_id}`` ← ``project`` …)."""
    async def build(world: World, marker: str) -> Call:
        return Call(template.format(**{name: await world.get(kind) for name, kind in kinds.items()}))
    return build


def body(template: str, make: Callable[[dict[str, Any], str], dict[str, Any]], **kinds: str) -> Build:
    async def build(world: World, marker: str) -> Call:
        ids = {kind: await world.get(kind) for kind in kinds.values()}
        return Call(template.format(**{name: ids[kind] for name, kind in kinds.items()}), make(ids, marker))
    return build


def plain(template: str, payload: dict[str, Any] | None = None, **params: Any) -> Build:
    async def build(world: World, marker: str) -> Call:
        return Call(template, payload, params or None)
    return build


def without(field_name: str, *kinds: str) -> ListCheck:
    """B's page holds none of A's resources (``field_name`` of each row)."""
    async def check(world: World, response: httpx.Response) -> None:
        theirs = {await world.get(kind) for kind in kinds}
        shown = {row[field_name] for row in response.json()["data"]}
        assert not theirs & shown, f"another user's rows listed: {theirs & shown}"
    return check


async def usage_without_owner(world: World, response: httpx.Response) -> None:
    groups = {row["group"] for row in response.json()["data"]}
    assert world.owner_usage_group is not None
    assert world.owner_usage_group not in groups, groups


async def own_usage(world: World, marker: str) -> Call:
    """A's usage is written (off the hot path) before B asks for theirs, so leaving it out means something."""
    await world.get("conversation")
    for _ in range(200):
        answer = await world.client.get("/v1/usage", params={"group_by": "user"}, headers=world.owner)
        groups = answer.json()["data"]
        if groups:
            world.owner_usage_group = groups[0]["group"]
            break
        await _pause()
    assert world.owner_usage_group is not None, "A's usage was never written"
    return Call("/v1/usage", params={"group_by": "user"})


async def _pause() -> None:
    await asyncio.sleep(0.05)


def _register(ids: dict[str, Any], marker: str) -> dict[str, Any]:
    return {"username": f"reg-{uuid.uuid4().hex[:8]}", "password": USER_PASSWORD}


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
ALIAS = "upstream-alias"  # an alias on the fake upstream (bench/fake_openai_endpoints.py), for the forwarded routes


def upload(template: str) -> Build:
    async def build(world: World, marker: str) -> Call:
        return Call(template, files={"model": (None, ALIAS), "file": ("a.wav", b"RIFF")})
    return build

# The one table: every route the app serves, and who may use it.
ACCESS: dict[tuple[str, str], Rule] = {
    ("GET", "/healthz"): Rule(Access.PUBLIC, plain("/healthz")),
    ("GET", "/readyz"): Rule(Access.PUBLIC, plain("/readyz")),
    ("GET", "/metrics"): Rule(Access.PUBLIC, plain("/metrics")),
    ("POST", "/auth/login"): Rule(Access.PUBLIC, plain("/auth/login", {"username": "admin2",
                                                                      "password": USER_PASSWORD})),
    ("POST", "/auth/register"): Rule(Access.PUBLIC, body("/auth/register", _register)),
    ("GET", "/auth/me"): Rule(Access.USER, plain("/auth/me")),
    ("GET", "/auth/me/preferences"): Rule(Access.USER, plain("/auth/me/preferences")),
    # A preference may name a prompt of one's own (or a shared one), never another user's.
    ("PUT", "/auth/me/preferences"): Rule(Access.OWNER, body("/auth/me/preferences", lambda ids, _: {
        "system_prompt_id": ids["prompt"]}, p="prompt"), refused=(400, "prompt_not_found")),
    ("POST", "/auth/logout"): Rule(Access.USER, plain("/auth/logout"), fresh_login=True),
    ("POST", "/auth/password"): Rule(Access.USER, plain("/auth/password", {
        "current_password": USER_PASSWORD, "new_password": "another-password-456"}), fresh_login=True),
    ("GET", "/v1/keys"): Rule(Access.OWN_LIST, plain("/v1/keys"), list_check=without("id", "key")),
    ("POST", "/v1/keys"): Rule(Access.USER, plain("/v1/keys", {"name": "mine"})),
    ("DELETE", "/v1/keys/{key_id}"): Rule(Access.OWNER, path("/v1/keys/{k}", k="key")),
    ("POST", "/v1/chat/completions"): Rule(Access.USER, plain("/v1/chat/completions", CHAT)),
    ("POST", "/v1/completions"): Rule(Access.USER, plain("/v1/completions", {"model": MODEL, "prompt": "hi",
                                                                              "max_tokens": 3})),
    ("GET", "/v1/models"): Rule(Access.USER, plain("/v1/models")),
    ("GET", "/v1/models/{model_id:path}"): Rule(Access.USER, plain(f"/v1/models/{MODEL}")),
    # Continuing A's conversation is reading it (its history goes into the prompt) and changing it.
    ("POST", "/v1/chat"): Rule(Access.OWNER, body("/v1/chat", lambda ids, marker: {
        "message": marker, "model": MODEL, "conversation_id": ids["conversation"]}, c="conversation")),
    ("POST", "/v1/chat/stream"): Rule(Access.OWNER, body("/v1/chat/stream", lambda ids, marker: {
        "message": marker, "model": MODEL, "conversation_id": ids["conversation"]}, c="conversation")),
    ("GET", "/v1/chat/stream/{stream_id}"): Rule(Access.OWNER, path("/v1/chat/stream/{s}", s="stream")),
    ("POST", "/v1/chat/stream/{stream_id}/cancel"): Rule(Access.OWNER, path("/v1/chat/stream/{s}/cancel",
                                                                            s="stream")),
    ("GET", "/v1/projects"): Rule(Access.OWN_LIST, plain("/v1/projects"), list_check=without("id", "project")),
    ("POST", "/v1/projects"): Rule(Access.USER, plain("/v1/projects", {"name": "mine"})),
    ("GET", "/v1/projects/{project_id}"): Rule(Access.OWNER, path("/v1/projects/{p}", p="project")),
    ("PATCH", "/v1/projects/{project_id}"): Rule(Access.OWNER, body("/v1/projects/{p}", lambda ids, marker: {
        "name": marker}, p="project")),
    ("DELETE", "/v1/projects/{project_id}"): Rule(Access.OWNER, path("/v1/projects/{p}", p="project")),
    ("GET", "/v1/conversations"): Rule(Access.OWN_LIST, plain("/v1/conversations"),
                                       list_check=without("id", "conversation")),
    # Filing a new conversation into A's project.
    ("POST", "/v1/conversations"): Rule(Access.OWNER, body("/v1/conversations", lambda ids, marker: {
        "title": marker, "project_id": ids["project"]}, p="project")),
    ("GET", "/v1/conversations/{conversation_id}"): Rule(Access.OWNER, path("/v1/conversations/{c}",
                                                                            c="conversation")),
    ("PATCH", "/v1/conversations/{conversation_id}"): Rule(Access.OWNER, body(
        "/v1/conversations/{c}", lambda ids, marker: {"title": marker}, c="conversation")),
    ("DELETE", "/v1/conversations/{conversation_id}"): Rule(Access.OWNER, path("/v1/conversations/{c}",
                                                                               c="conversation")),
    ("GET", "/v1/conversations/{conversation_id}/export"): Rule(Access.OWNER, path(
        "/v1/conversations/{c}/export", c="conversation")),
    ("DELETE", "/v1/conversations/{conversation_id}/last-exchange"): Rule(Access.OWNER, path(
        "/v1/conversations/{c}/last-exchange", c="conversation")),
    ("GET", "/v1/prompts"): Rule(Access.OWN_LIST, plain("/v1/prompts"), list_check=without("id", "prompt")),
    ("POST", "/v1/prompts"): Rule(Access.USER, plain("/v1/prompts", {"name": "mine", "content": "be brief"})),
    ("GET", "/v1/prompts/{prompt_id}"): Rule(Access.OWNER, path("/v1/prompts/{p}", p="prompt")),
    ("PATCH", "/v1/prompts/{prompt_id}"): Rule(Access.OWNER, body("/v1/prompts/{p}", lambda ids, marker: {
        "content": marker}, p="prompt")),
    ("DELETE", "/v1/prompts/{prompt_id}"): Rule(Access.OWNER, path("/v1/prompts/{p}", p="prompt")),
    ("GET", "/v1/usage"): Rule(Access.OWN_LIST, own_usage, list_check=usage_without_owner),
    ("POST", "/v1/embeddings"): Rule(Access.USER, plain("/v1/embeddings", {"model": ALIAS, "input": "hi"})),
    ("POST", "/v1/responses"): Rule(Access.USER, plain("/v1/responses", {"model": ALIAS, "input": "hi"})),
    ("POST", "/v1/audio/speech"): Rule(Access.USER, plain("/v1/audio/speech", {"model": ALIAS, "voice": "alloy",
                                                                               "input": "hi"})),
    ("POST", "/v1/images/generations"): Rule(Access.USER, plain("/v1/images/generations", {"model": ALIAS,
                                                                                           "prompt": "a fox"})),
    ("POST", "/v1/moderations"): Rule(Access.USER, plain("/v1/moderations", {"model": ALIAS, "input": "hi"})),
    ("POST", "/v1/rerank"): Rule(Access.USER, plain("/v1/rerank", {"model": ALIAS, "query": "q",
                                                                   "documents": ["a"]})),
    ("POST", "/v1/score"): Rule(Access.USER, plain("/v1/score", {"model": ALIAS, "text_1": "a", "text_2": "b"})),
    ("POST", "/v1/audio/transcriptions"): Rule(Access.USER, upload("/v1/audio/transcriptions")),
    ("POST", "/v1/audio/translations"): Rule(Access.USER, upload("/v1/audio/translations")),
    # A stored response is its maker's: anyone else (an admin too) is told it does not exist.
    ("GET", "/v1/responses/{response_id}"): Rule(Access.OWNER, path("/v1/responses/{r}", r="response"),
                                                 refused=(404, "response_not_found")),
    ("DELETE", "/v1/responses/{response_id}"): Rule(Access.OWNER, path("/v1/responses/{r}", r="response"),
                                                    refused=(404, "response_not_found")),
    ("GET", "/v1/responses/{response_id}/input_items"): Rule(Access.OWNER, path(
        "/v1/responses/{r}/input_items", r="response"), refused=(404, "response_not_found")),
    ("POST", "/v1/responses/{response_id}/cancel"): Rule(Access.OWNER, path("/v1/responses/{r}/cancel",
                                                                            r="response"),
                                                         refused=(404, "response_not_found")),
}
ADMIN_ROUTES = [
    ("GET", "/admin/overview"), ("GET", "/admin/users"), ("POST", "/admin/users"), ("GET", "/admin/users/{user_id}"),
    ("PATCH", "/admin/users/{user_id}"), ("PUT", "/admin/users/{user_id}/limits"),
    ("PUT", "/admin/keys/{key_id}/limits"), ("GET", "/admin/keys"), ("DELETE", "/admin/keys/{key_id}"),
    ("GET", "/admin/audit"), ("GET", "/admin/resources"),
    ("GET", "/admin/engine/models"), ("POST", "/admin/engine/switch"), ("DELETE", "/admin/engine/models/{name}"),
    ("POST", "/admin/engine/unload"), ("POST", "/admin/engine/downloads"), ("GET", "/admin/engine/downloads"),
    ("GET", "/admin/engine/downloads/{job_id}"), ("DELETE", "/admin/engine/downloads/{job_id}"),
    ("GET", "/admin/providers"), ("POST", "/admin/providers"), ("GET", "/admin/providers/{provider_id}"),
    ("PATCH", "/admin/providers/{provider_id}"), ("DELETE", "/admin/providers/{provider_id}"),
    ("POST", "/admin/providers/{provider_id}/test"),
    ("GET", "/admin/models"), ("POST", "/admin/models"), ("GET", "/admin/models/{model_id}"),
    ("PUT", "/admin/models/{model_id}"), ("DELETE", "/admin/models/{model_id}"),
    ("GET", "/admin/runners/templates"), ("POST", "/admin/runners/preview"), ("POST", "/admin/runners"),
    ("GET", "/admin/runners"), ("GET", "/admin/runners/{runner_id}"), ("POST", "/admin/runners/{runner_id}/stop"),
    ("DELETE", "/admin/runners/{runner_id}"), ("GET", "/admin/runners/{runner_id}/logs"),
    ("GET", "/admin/usage"), ("GET", "/admin/usage/logs"),
]
# Admin routes are called with ids nobody has (so nothing is changed): the admin gets past the check (404, 422 or
# an answer), everyone else does not.
for _route in ADMIN_ROUTES:
    ACCESS[_route] = Rule(Access.ADMIN, plain(re.sub(r"\{[^}]+\}", "999999", _route[1])))

COLUMNS = ("anonymous", "revoked_key", "expired_token", "other_user", "admin", "user")  # the owner goes last


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


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return echo_settings(settings)


@pytest.fixture
def extra_backends() -> list[Backend]:
    return echo_backends()


def test_every_route_has_exactly_one_declared_access(app: FastAPI) -> None:
    served = api_routes(app)
    assert len(served) == len(set(served))
    assert not set(served) - set(ACCESS), f"routes without a declared access: {sorted(set(served) - set(ACCESS))}"
    assert not set(ACCESS) - set(served), f"declared routes the app does not serve: {sorted(set(ACCESS) - set(served))}"


@dataclass
class Caller:
    headers: dict[str, str]
    password: str = USER_PASSWORD


def check(rule: Rule, column: str, response: httpx.Response, where: str) -> None:
    status = response.status_code
    if rule.access is Access.PUBLIC:
        assert status not in (401, 403), (where, response.text)
        return
    if column in ("anonymous", "revoked_key", "expired_token"):
        code = {"anonymous": "missing_credentials", "revoked_key": "invalid_api_key",
                "expired_token": "token_expired"}[column]
        assert status == 401, (where, response.text)
        assert_error(response, 401, code)
        assert response.headers.get("www-authenticate") == "Bearer", where
        return
    if rule.access is Access.ADMIN:
        if column == "admin":
            assert status not in (401, 403), (where, response.text)
        else:
            assert status == 403, (where, response.text)
            assert_error(response, 403, "admin_required")
        return
    if rule.access is Access.OWNER and column in ("other_user", "admin"):
        status_expected, code = rule.refused
        assert status == status_expected, (where, response.text)
        assert_error(response, status_expected, code)
        return
    assert 200 <= status < 300, (where, response.text)


@pytest.fixture(scope="module")
def endpoints_upstream() -> Iterator[FakeEndpointsUpstream]:
    fake = FakeEndpointsUpstream()
    fake.start()
    yield fake
    fake.stop()


async def test_access_matrix(app: FastAPI, client: httpx.AsyncClient, make_user: MakeUser,
                             admin_token: str, endpoints_upstream: FakeEndpointsUpstream) -> None:
    provider = await client.post("/admin/providers", headers=bearer(admin_token), json={
        "name": "fake", "base_url": endpoints_upstream.base_url})
    assert provider.status_code == 201, provider.text
    alias = await client.post("/admin/models", headers=bearer(admin_token), json={"name": ALIAS, "deployments": [
        {"provider_id": provider.json()["id"], "upstream_model": "fake-any"}]})
    assert alias.status_code == 201, alias.text
    await make_user("alice")
    await make_user("bob")
    await make_user("admin2", role=Role.ADMIN)
    alice = await login(client, "alice", USER_PASSWORD)
    callers = {
        "anonymous": {},
        "revoked_key": bearer(await revoked_key(client, alice)),
        "expired_token": bearer(await expired_token(app, client, "alice")),
        "other_user": bearer(await login(client, "bob", USER_PASSWORD)),
        "admin": bearer(admin_token),
        "user": bearer(alice),
    }
    world = World(client, alice)
    checked = 0
    for (method, route), rule in ACCESS.items():
        world.new_route()
        assert rule.build is not None
        for column in COLUMNS:
            headers = callers[column]
            if rule.fresh_login and column in ("other_user", "admin", "user"):
                username = f"{column}-{uuid.uuid4().hex[:6]}"
                await make_user(username, role=Role.ADMIN if column == "admin" else Role.USER)
                headers = bearer(await login(client, username, USER_PASSWORD))
            call = await rule.build(world, "owner-edit" if column == "user" else INTRUDER)
            response = await client.request(method, call.path, json=call.json, params=call.params, files=call.files,
                                            headers=headers)
            check(rule, column, response, f"{method} {route} as {column}")
            if rule.list_check is not None and column == "other_user":
                await rule.list_check(world, response)
            checked += 1
    assert checked == len(COLUMNS) * len(ACCESS)
    await assert_untouched_by_intruders(client, callers["user"])


async def assert_untouched_by_intruders(client: httpx.AsyncClient, owner: dict[str, str]) -> None:
    """Nothing B or the admin sent into A's resources landed there."""
    seen = []
    for listing in ("/v1/projects", "/v1/conversations", "/v1/prompts"):
        seen.append((await client.get(listing, params={"limit": 200}, headers=owner)).json())
    for conversation in seen[1]["data"]:
        seen.append((await client.get(f"/v1/conversations/{conversation['id']}", headers=owner)).json())
    assert INTRUDER not in json.dumps(seen)
