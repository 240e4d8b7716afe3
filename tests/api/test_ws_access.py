"""Acceptance: the WebSocket channel's access matrix. Every message type the channel handles × {anonymous, user,
other user, admin, revoked API key, expired token}, each type's access declared once in ``WS_ACCESS``.

The types are read from the channel itself (its ``on_<type>`` handlers) and from docs/websocket.md: a new type
without an entry fails here. The app runs in process behind a real uvicorn, driven by the `websockets` client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.services.accounts.credentials import credential_hash
from api.services.gateway.backends import Backend
from api.settings import Settings
from api.ws.channel import Channel
from db.models import AuthSession, Role
from db.types import utcnow
from tests.api.conftest import MakeUser
from tests.conftest import REPO
from tests.support.access import USER_PASSWORD, bearer, login
from tests.support.access_matrix import MODEL, Access, echo_backends, echo_settings, expired_token, revoked_key
from tests.support.net import uvicorn_in_loop

WS_ACCESS: dict[str, Access] = {
    "ping": Access.PUBLIC,
    "hello": Access.OWNER,  # opens a new session, or resumes one's own; someone else's is unknown
    "inference": Access.USER,
    "cancel": Access.USER,
    "config": Access.USER,
    "ack": Access.USER,
    "get_resources": Access.USER,
    "list_models": Access.USER,
    "switch_model": Access.ADMIN,
    "download_model": Access.ADMIN,
    "delete_model": Access.ADMIN,
}
# What an allowed caller sends; admin types name nothing that exists, so nothing is changed.
WS_MESSAGES: dict[str, dict[str, Any]] = {
    "ping": {}, "cancel": {}, "config": {"config": {"temperature": 0}}, "ack": {"seq": 0}, "get_resources": {},
    "list_models": {}, "inference": {"prompt": {"user": "hi"}, "config": {"model": MODEL, "max_tokens": 3}},
    "switch_model": {"model": "no-such-model"}, "delete_model": {"model": "no-such-model"},
    "download_model": {"source": "not a repo id!"},
}
# What an allowed caller gets (admin types: an error about the missing model or source, past the role check).
ALLOWED_ANSWER: dict[str, str | None] = {
    "ping": "pong", "cancel": None, "config": "config_ack", "ack": "ack_received", "get_resources": "resources",
    "list_models": "models_list", "inference": "done", "switch_model": "error", "delete_model": "error",
    "download_model": "error"}
# Codes that mean "the access check said no".
REFUSALS = {"hello_first", "admin_required", "missing_credentials", "invalid_token", "token_expired",
            "invalid_api_key", "session_not_found", "account_disabled"}
HELLO_REFUSED = {"anonymous": "missing_credentials", "revoked_key": "invalid_api_key",
                 "expired_token": "token_expired", "other_user": "session_not_found"}


def handled_types() -> set[str]:
    return {name.removeprefix("on_") for name in dir(Channel) if name.startswith("on_")}


def documented_types() -> set[str]:
    text = (REPO / "docs" / "websocket.md").read_text()
    section = text.split("## Client → server", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)`", section, flags=re.MULTILINE))


def test_every_message_type_has_exactly_one_declared_access() -> None:
    assert handled_types() == set(WS_ACCESS), handled_types() ^ set(WS_ACCESS)
    assert documented_types() == set(WS_ACCESS), documented_types() ^ set(WS_ACCESS)
    assert set(WS_MESSAGES) == set(WS_ACCESS) - {"hello"}


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The echo app's settings, with what a test passes as its (indirect) ``settings`` parameter."""
    return echo_settings(settings).model_copy(update=getattr(request, "param", {}))


@pytest.fixture
def extra_backends() -> list[Backend]:
    return echo_backends()


@pytest.fixture
async def ws_url(app: FastAPI) -> AsyncIterator[str]:
    async with uvicorn_in_loop(app) as port:
        yield f"ws://127.0.0.1:{port}/v1/ws"


async def receive(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(30):
        return json.loads(await ws.recv())


async def answers(ws: ClientConnection, kind: str) -> list[dict[str, Any]]:
    """What the channel answers to one ``kind`` message: everything up to the pong of a ping sent after it (and,
    for an inference it took, through its end)."""
    await ws.send(json.dumps({"type": kind, **WS_MESSAGES[kind]}))
    await ws.send(json.dumps({"type": "ping"}))
    replies: list[dict[str, Any]] = []
    for _ in range(200):
        replies.append(await receive(ws))
        pongs = sum(reply["type"] == "pong" for reply in replies)
        # An inference that was not refused outright runs in the session after the pong: wait for its end.
        queued = kind == "inference" and not any(reply["type"] == "error" for reply in replies)
        finished = any(reply["type"] in {"done", "error"} and "request_id" in reply for reply in replies)
        if pongs == (2 if kind == "ping" else 1) and (not queued or finished):
            return replies
    raise AssertionError(f"no end to the answers to {kind}: {replies}")


async def test_websocket_access_matrix(app: FastAPI, client: httpx.AsyncClient, ws_url: str,
                                       make_user: MakeUser, admin_token: str) -> None:
    await make_user("alice")
    await make_user("bob")
    alice = await login(client, "alice", USER_PASSWORD)
    async with connect(ws_url) as ws:  # A's session, with something in its buffer
        await ws.send(json.dumps({"type": "hello", "token": alice}))
        session_id = (await receive(ws))["session_id"]
        assert {"done"} <= {reply["type"] for reply in await answers(ws, "inference")}
    hellos = {
        "anonymous": {},
        "revoked_key": {"token": await revoked_key(client, alice)},
        "expired_token": {"token": await expired_token(app, client, "alice")},
        "other_user": {"token": await login(client, "bob", USER_PASSWORD), "session_id": session_id},
        "admin": {"token": admin_token},
        "user": {"token": alice, "session_id": session_id},
    }
    for column, hello in hellos.items():
        async with connect(ws_url) as ws:
            await ws.send(json.dumps({"type": "hello", **hello}))
            welcome = await receive(ws)
            where = f"hello as {column}"
            if column in HELLO_REFUSED:
                assert welcome["type"] == "error" and welcome["code"] == HELLO_REFUSED[column], (where, welcome)
            else:
                assert welcome["type"] == "welcome", (where, welcome)
                assert welcome["resumed"] is (column == "user"), (where, welcome)
            for kind in WS_MESSAGES:
                check(WS_ACCESS[kind], column, await answers(ws, kind), f"{kind} as {column}")


def check(access: Access, column: str, replies: list[dict[str, Any]], where: str) -> None:
    refusals = [reply["code"] for reply in replies if reply["type"] == "error" and reply["code"] in REFUSALS]
    if access is Access.PUBLIC:
        assert not refusals, (where, replies)
    elif column in HELLO_REFUSED:  # never got a session: nothing but ping works
        assert refusals == ["hello_first"], (where, replies)
    elif access is Access.ADMIN and column != "admin":
        assert refusals == ["admin_required"], (where, replies)
    else:
        assert not refusals, (where, replies)
        expected = ALLOWED_ANSWER[where.split()[0]]
        assert expected is None or expected in {reply["type"] for reply in replies}, (where, replies)


def refusals_in(replies: list[dict[str, Any]]) -> list[str]:
    return [reply["code"] for reply in replies if reply["type"] == "error" and reply["code"] in REFUSALS]


async def hello_with(ws: ClientConnection, token: str) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "hello", "token": token}))
    welcome = await receive(ws)
    assert welcome["type"] == "welcome", welcome
    return welcome


async def last_words(ws: ClientConnection, within_s: float) -> tuple[dict[str, Any], int | None]:
    """What a socket the server gives up on gets, with nothing more sent to it: an error, then the close."""
    async with asyncio.timeout(within_s):
        error = json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    return error, ws.close_code


async def test_an_open_socket_loses_admin_rights_with_the_role_and_is_closed_when_disabled(
        client: httpx.AsyncClient, ws_url: str, make_user: MakeUser, admin_token: str) -> None:
    root = await make_user("root", role=Role.ADMIN)
    async with connect(ws_url) as ws:
        await hello_with(ws, await login(client, "root", USER_PASSWORD))
        assert refusals_in(await answers(ws, "delete_model")) == []  # an admin: past the role check
        demoted = await client.patch(f"/admin/users/{root.id}", json={"role": "user"}, headers=bearer(admin_token))
        assert demoted.status_code == 200, demoted.text
        for kind in ("delete_model", "download_model", "switch_model"):
            assert refusals_in(await answers(ws, kind)) == ["admin_required"], kind
        disabled = await client.patch(f"/admin/users/{root.id}", json={"is_active": False},
                                      headers=bearer(admin_token))
        assert disabled.status_code == 200, disabled.text
        error, close_code = await last_words(ws, within_s=10)  # a quiet socket notices too
    assert error["type"] == "error" and error["code"] == "unauthorized", error
    assert close_code == 1008


async def test_a_revoked_key_or_an_expired_login_closes_its_socket_at_the_next_message(
        app: FastAPI, client: httpx.AsyncClient, ws_url: str, make_user: MakeUser) -> None:
    await make_user("kay")
    token = await login(client, "kay", USER_PASSWORD)
    key = (await client.post("/v1/keys", json={"name": "ws"}, headers=bearer(token))).json()
    other_login = await login(client, "kay", USER_PASSWORD)
    async with connect(ws_url) as keyed, connect(ws_url) as logged_in:
        await hello_with(keyed, key["key"])
        await hello_with(logged_in, other_login)
        assert "done" in {reply["type"] for reply in await answers(keyed, "inference")}
        assert (await client.delete(f"/v1/keys/{key['id']}", headers=bearer(token))).status_code == 200
        async with app.state.services.sessionmaker() as session:
            row = (await session.scalars(select(AuthSession).where(
                AuthSession.token_hash == credential_hash(other_login)))).one()
            row.expires_at = utcnow() - timedelta(seconds=1)
            await session.commit()
        for ws in (keyed, logged_in):  # (closed already, if its quiet check came first: the same last words)
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps({"type": "inference", **WS_MESSAGES["inference"]}))
        keyed_error, keyed_close = await last_words(keyed, within_s=10)
        login_error, login_close = await last_words(logged_in, within_s=10)
    assert (keyed_error["code"], keyed_error["reason"], keyed_close) == ("unauthorized", "invalid_api_key", 1008)
    assert (login_error["code"], login_error["reason"], login_close) == ("unauthorized", "token_expired", 1008)
    assert (await client.get("/auth/me", headers=bearer(token))).status_code == 200  # the account is fine


@pytest.mark.parametrize("settings", [{"ws_hello_timeout": timedelta(seconds=1)}], indirect=True,
                         ids=["hello-timeout-1s"])
async def test_pings_do_not_hold_a_socket_open_without_hello(ws_url: str, user_token: str) -> None:
    async with connect(ws_url) as quiet, connect(ws_url) as signed_in:
        connected = time.monotonic()
        await hello_with(signed_in, user_token)
        replies: list[dict[str, Any]] = []
        with contextlib.suppress(ConnectionClosed):
            while time.monotonic() - connected < 20:
                await quiet.send(json.dumps({"type": "ping"}))
                replies.append(await receive(quiet))
                await asyncio.sleep(0.1)
        lasted = time.monotonic() - connected
        with contextlib.suppress(ConnectionClosed):  # what came before the close, if a ping met the close
            while True:
                replies.append(await receive(quiet))
        assert replies[-1].get("code") == "hello_timeout" and quiet.close_code == 1008, replies[-3:]
        assert {reply["type"] for reply in replies[:-1]} == {"pong"}
        assert 0.9 < lasted < 10
        await signed_in.send(json.dumps({"type": "ping"}))  # an authenticated socket has no such deadline
        assert (await receive(signed_in))["type"] == "pong"


@pytest.mark.parametrize("settings", [{"ws_unauthenticated_per_address": 2}], indirect=True, ids=["cap-2"])
async def test_an_address_holds_few_sockets_that_have_not_said_hello(ws_url: str, user_token: str) -> None:
    async def pong(ws: ClientConnection) -> str:
        await ws.send(json.dumps({"type": "ping"}))
        return (await receive(ws))["type"]

    async with connect(ws_url) as first, connect(ws_url) as second:
        assert [await pong(first), await pong(second)] == ["pong", "pong"]
        async with connect(ws_url) as third:
            error, close_code = await last_words(third, within_s=10)
        assert (error["code"], close_code) == ("too_many_connections", 1013)
        await hello_with(second, user_token)  # no longer waiting: its place is free
        async with connect(ws_url) as fourth:
            assert await pong(fourth) == "pong"
        assert await pong(first) == "pong"
