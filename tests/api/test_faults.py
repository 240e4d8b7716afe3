"""Faults (issue 8): clients that go away, upstreams that misbehave, a database that vanishes for a while, a
SIGTERM during generation and a log file that cannot be written. Each test shows the fault is contained and that
the server then serves the next request normally. The engine's own mid-batch failure is in
tests/engine/test_engine_faults.py."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from bench.fake_openai import WORDS, FakeUpstream
from tests.api.conftest import assert_error
from tests.support.access import admin_token_of, bearer
from tests.support.gateway import add_alias, add_provider, usage_rows
from tests.support.live import Account, LiveApi, start_server, wait_ready
from tests.support.net import free_port

ANSWER = "".join(WORDS)
MODEL = "tiny-chat"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def upstreams_forgotten(live_api: LiveApi) -> Iterator[None]:
    """Each test's aliases and providers go with it: repeated (`make steady`), the module's server would otherwise
    health-check hundreds of dead or stalled upstreams every second, and later tests would measure that."""
    yield
    for model in httpx.get(f"{live_api.base_url}/admin/models", headers=live_api.admin).json()["data"]:
        if model["name"].startswith("alias-"):
            httpx.delete(f"{live_api.base_url}/admin/models/{model['id']}", headers=live_api.admin)
    for provider in httpx.get(f"{live_api.base_url}/admin/providers", headers=live_api.admin).json()["data"]:
        if provider["name"].startswith("prov-"):
            httpx.delete(f"{live_api.base_url}/admin/providers/{provider['id']}", headers=live_api.admin)


def alias_on(live_api: LiveApi, base_url: str, upstream_model: str, *, timeout_s: float = 5) -> str:
    provider = add_provider(live_api, base_url, timeout_s=timeout_s)
    return add_alias(live_api, [{"provider_id": provider["id"], "upstream_model": upstream_model}])


def data_lines(live_api: LiveApi, account: Account, body: dict[str, Any]) -> list[str]:
    with httpx.stream("POST", f"{live_api.base_url}/v1/chat/completions", headers=account.headers, timeout=30,
                      json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        return [line for line in response.iter_lines() if line.startswith("data:")]


def assert_serves_next(live_api: LiveApi, account: Account, upstream: FakeUpstream | None = None) -> None:
    """The next requests are served normally: the local model (streamed and not), and an upstream when given."""
    url = f"{live_api.base_url}/v1/chat/completions"
    local = httpx.post(url, headers=account.headers, timeout=30,
                       json={"model": MODEL, "messages": HI, "max_tokens": 4, "temperature": 0})
    assert local.status_code == 200, local.text
    streamed = data_lines(live_api, account, {"model": MODEL, "messages": HI, "max_tokens": 4, "temperature": 0})
    assert streamed[-1] == "data: [DONE]" and not any('"error"' in line for line in streamed)
    text = "".join(json.loads(line[5:])["choices"][0]["delta"].get("content") or ""
                   for line in streamed[:-1] if json.loads(line[5:])["choices"])
    assert text == local.json()["choices"][0]["message"]["content"]
    if upstream is not None:
        alias = alias_on(live_api, upstream.base_url, "fake-fast")
        answer = httpx.post(url, headers=account.headers, timeout=30, json={"model": alias, "messages": HI})
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == ANSWER


def open_two_streams(stack: contextlib.ExitStack, base_url: str, account: Account, body: dict[str, Any]
                     ) -> tuple[httpx.Response, httpx.Response]:
    """An OpenAI chat stream and a native chat stream with the same sampling ``body``, held open by ``stack``."""
    openai_stream = stack.enter_context(httpx.stream(
        "POST", f"{base_url}/v1/chat/completions", headers=account.headers, timeout=60,
        json={"model": MODEL, "messages": HI, "stream": True, **body}))
    native = stack.enter_context(httpx.stream(
        "POST", f"{base_url}/v1/chat/stream", headers=account.headers, timeout=60,
        json={"message": "Tell a story.", **body}))
    return openai_stream, native


def send_and_drop(live_api: LiveApi, path: str, headers: dict[str, str], body: dict[str, Any],
                  *, wait_s: float = 0.0) -> None:
    """Send a whole HTTP request on a socket of its own, wait ``wait_s`` (reading nothing), then close it."""
    address = urlsplit(live_api.base_url)
    payload = json.dumps(body).encode()
    head = "".join(f"{name}: {value}\r\n" for name, value in {
        "Host": address.netloc, "Content-Type": "application/json", "Content-Length": str(len(payload)),
        **headers}.items())
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + payload)
        time.sleep(wait_s)


# --- upstream faults ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("fault", ["refuses", "times-out"])
def test_an_upstream_failing_before_it_answers_gets_a_clean_503(live_api: LiveApi, upstream: FakeUpstream,
                                                               fault: str, stream: bool) -> None:
    if fault == "refuses":  # nothing listens there: the connection is refused
        alias = alias_on(live_api, f"http://127.0.0.1:{free_port()}/v1", "fake-fast")
    else:  # the upstream takes the request and says nothing, not even headers, past the provider's timeout
        alias = alias_on(live_api, upstream.base_url, "fake-stall", timeout_s=1)
    account = live_api.new_account("upfail")
    disconnects = len(upstream.disconnects)
    started = time.monotonic()
    answer = httpx.post(f"{live_api.base_url}/v1/chat/completions", headers=account.headers, timeout=30,
                        json={"model": alias, "messages": HI, "stream": stream})
    assert time.monotonic() - started < 5
    error = assert_error(answer, 503)
    assert error["type"] == "server_error" and "Traceback" not in answer.text
    [row] = usage_rows(live_api, account, 1)
    assert row["status"] == "error"
    if fault == "times-out":  # the gateway hung up on it
        deadline = time.monotonic() + 3
        while len(upstream.disconnects) == disconnects and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(upstream.disconnects) > disconnects
    assert_serves_next(live_api, account, upstream)


@pytest.mark.parametrize("fault", ["fake-hang", "fake-garbage"])
def test_an_upstream_failing_mid_stream_ends_it_with_an_error_frame_and_done(live_api: LiveApi,
                                                                             upstream: FakeUpstream,
                                                                             fault: str) -> None:
    """fake-hang: headers and a first chunk, then silence past the provider's timeout; fake-garbage: an event
    that is not JSON. (An upstream dying mid-stream: tests/api/test_gateway.py.)"""
    alias = alias_on(live_api, upstream.base_url, fault, timeout_s=1)
    account = live_api.new_account("upmid")
    started = time.monotonic()
    lines = data_lines(live_api, account, {"model": alias, "messages": HI})
    assert time.monotonic() - started < 5
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][5:])["error"]
    assert error["code"] == "upstream_error" and error["type"] == "server_error" and error["message"]
    assert all("choices" in json.loads(line[5:]) for line in lines[:-2])  # well-formed chunks before it
    [row] = usage_rows(live_api, account, 1)
    assert row["status"] == "error"
    assert_serves_next(live_api, account, upstream)


# --- clients that go away ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_a_client_gone_before_the_first_token_frees_its_slot_and_is_billed_as_cancelled(live_api: LiveApi,
                                                                                       stream: bool) -> None:
    """(Mid-stream drops: tests/api/test_openai_compat.py for the OpenAI stream, tests/api/test_native_chat.py
    for the native stream, which goes on into its buffer for the resume window, tests/api/test_websocket.py for
    the WebSocket, whose generation goes on into the session's buffer.)"""
    account = live_api.new_account("early")
    send_and_drop(live_api, "/v1/chat/completions", account.headers, {
        "model": MODEL, "messages": HI, "max_tokens": 3000, "temperature": 0, "stream": stream})
    live_api.wait_engine_idle(within_s=2.0)
    usage = live_api.usage_by_status(account, expect_requests=1)
    assert set(usage) == {"cancelled"} and usage["cancelled"]["requests"] == 1, usage
    assert usage["cancelled"]["completion_tokens"] < 3000
    assert_serves_next(live_api, account)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_a_client_gone_while_the_upstream_is_silent_closes_the_upstream(live_api: LiveApi, upstream: FakeUpstream,
                                                                         stream: bool) -> None:
    alias = alias_on(live_api, upstream.base_url, "fake-stall", timeout_s=30)
    account = live_api.new_account("earlyup")
    disconnects = len(upstream.disconnects)
    send_and_drop(live_api, "/v1/chat/completions", account.headers,
                  {"model": alias, "messages": HI, "stream": stream}, wait_s=0.3)
    left_at = time.monotonic()
    while len(upstream.disconnects) == disconnects and time.monotonic() - left_at < 5:
        time.sleep(0.02)
    assert len(upstream.disconnects) > disconnects, "the upstream request outlived its client"
    assert upstream.disconnects[-1] - left_at < 1.5
    [row] = usage_rows(live_api, account, 1)
    assert row["status"] == "cancelled"
    assert_serves_next(live_api, account, upstream)


def test_an_admin_gone_during_a_model_switch_leaves_a_model_loaded_and_serving(live_api: LiveApi) -> None:
    """The switch is not cut in half by the client leaving: it completes, and the engine serves."""
    live_api.wait_engine_idle(within_s=5)
    loads = live_api.server.console.read_text().count(f"serving {MODEL}:")
    send_and_drop(live_api, "/admin/engine/switch", live_api.admin, {"model": MODEL}, wait_s=0.05)
    deadline = time.monotonic() + 30
    while live_api.server.console.read_text().count(f"serving {MODEL}:") == loads:  # the switch ran to its end
        assert time.monotonic() < deadline, "the switch never finished"
        time.sleep(0.1)
    assert httpx.get(f"{live_api.base_url}/readyz", timeout=10).status_code == 200
    resources = httpx.get(f"{live_api.base_url}/admin/resources", headers=live_api.admin).json()
    assert resources["engine"]["running"] == 0 and resources["engine"]["queue_depth"] == 0
    assert_serves_next(live_api, live_api.new_account("switchdrop"))


# --- the process: a full disk for the log, SIGTERM mid-generation --------------------------------------------------

def test_a_log_file_that_cannot_be_written_does_not_stop_serving(live_api: LiveApi, tmp_path: Path) -> None:
    logs = tmp_path / "var" / "logs"
    logs.mkdir(parents=True)
    (logs / "llmws.log").symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full disk
    replica = start_server(tmp_path, live_api.env | {"LLMWS_DATA_DIR": str(tmp_path / "var")}, "fulldisk")
    try:
        wait_ready(replica)
        account = live_api.new_account("fulldisk")
        for _ in range(3):
            answer = httpx.post(f"{replica.base_url}/v1/chat/completions", headers=account.headers, timeout=30,
                                json={"model": MODEL, "messages": HI, "max_tokens": 4})
            assert answer.status_code == 200, answer.text
        assert httpx.get(f"{replica.base_url}/readyz").status_code == 200
    finally:
        console = replica.stop()
    assert "Application shutdown complete" in console  # a clean stop, not a crash
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in console  # the console still gets every line
    assert "Traceback" not in console and "Logging error" not in console


def test_sigterm_lets_streams_end_stores_them_and_another_process_resumes_them(live_api: LiveApi,
                                                                              tmp_path: Path) -> None:
    """SIGTERM while an OpenAI stream, a native stream and a WebSocket generation run: each ends (its done, or an
    error frame), the process exits within uvicorn's grace period, usage rows and the conversation are whole, and
    the native stream and the WebSocket session resume on another process on the same database."""
    from websockets.sync.client import connect

    from tests.support.sse import events_of
    from tests.support.ws import hello, receive, until_done, ws_url

    account = live_api.new_account("sigterm")
    replica = start_server(tmp_path, live_api.env | {"LLMWS_DATA_DIR": str(tmp_path / "var")}, "sigterm")
    wait_ready(replica)
    body = {"max_tokens": 200, "temperature": 0}
    with contextlib.ExitStack() as open_streams:
        openai_stream, native = open_two_streams(open_streams, replica.base_url, account, body)
        assert openai_stream.status_code == 200, openai_stream.read()
        openai_lines = openai_stream.iter_lines()
        openai_seen = [next(openai_lines) for _ in range(3)]
        native_events = events_of(native)
        native_seen = [next(native_events) for _ in range(3)]
        ws = open_streams.enter_context(connect(ws_url(replica.base_url)))
        session_id = hello(ws, account)["session_id"]
        ws.send(json.dumps({"type": "inference", "prompt": {"user": "Tell a story."}, "config": body}))
        ws_seen = [receive(ws) for _ in range(3)]

        stopped_at = time.monotonic()
        replica.process.send_signal(signal.SIGTERM)
        openai_seen += [line for line in openai_lines if line.startswith("data:")]
        native_seen += list(native_events)
        with contextlib.suppress(Exception):  # the socket may close before the last event
            until_done(ws, ws_seen)
        replica.process.wait(timeout=35)
    assert time.monotonic() - stopped_at < 35  # uvicorn's grace period is 30 s
    console = replica.console.read_text()
    assert "Application shutdown complete" in console and "Traceback" not in console

    assert openai_seen[-1] == "data: [DONE]"
    ending = json.loads(openai_seen[-2][5:])  # its finish chunk, or (on a slow machine) the shutdown's error frame
    assert ending.get("error", {}).get("code") == "engine_stopped" or ending["choices"][0]["finish_reason"], ending
    assert native_seen[-1].event in ("done", "error")
    stream_id, conversation = native_seen[0].data["stream_id"], native_seen[0].data["conversation_id"]
    # Another process on the same database has the native stream and the WebSocket session, whole.
    with httpx.stream("GET", f"{live_api.base_url}/v1/chat/stream/{stream_id}", headers=account.headers,
                      timeout=30) as again:
        replayed = list(events_of(again))
    assert [event.data for event in replayed] == [event.data for event in native_seen]
    with connect(ws_url(live_api.base_url)) as resumed:
        hello(resumed, account, session_id=session_id, last_seq=0)
        ws_events = until_done(resumed)
    assert ws_events[-1]["type"] in ("done", "error") and ws_events[0]["type"] == "start"
    # Usage: one row per request, none half-written; the conversation has the reply or none, never a part.
    usage = live_api.usage_by_status(account, expect_requests=3)
    assert sum(group["requests"] for group in usage.values()) == 3, usage
    saved = httpx.get(f"{live_api.base_url}/v1/conversations/{conversation}", headers=account.headers).json()
    replies = [m["content"] for m in saved["messages"] if m["role"] == "assistant"]
    streamed = "".join(event.data["text"] for event in native_seen if event.event == "token")
    assert replies in ([], [streamed]), (replies, streamed)
    assert_serves_next(live_api, account)


def test_generations_outliving_the_grace_period_end_with_an_error_frame_not_a_cut(live_api: LiveApi,
                                                                                   tmp_path: Path) -> None:
    """A generation longer than the shutdown grace period is ended at two thirds of it: the OpenAI stream gets
    the `engine_stopped` error frame and [DONE], the native stream its error event (stored: another process
    replays it), and both usage rows are written — instead of a body cut off when uvicorn cancels the response."""
    from tests.support.sse import events_of

    account = live_api.new_account("grace")
    grace_s = 3.0
    replica = start_server(tmp_path, live_api.env | {"LLMWS_DATA_DIR": str(tmp_path / "var"),
                                                     "LLMWS_SHUTDOWN_GRACE_S": str(grace_s)}, "grace")
    wait_ready(replica)
    body = {"max_tokens": 3000, "temperature": 0}
    with contextlib.ExitStack() as open_streams:
        openai_stream, native = open_two_streams(open_streams, replica.base_url, account, body)
        assert openai_stream.status_code == 200 and native.status_code == 200
        openai_lines = openai_stream.iter_lines()
        native_events = events_of(native)
        start = next(native_events)
        assert start.event == "start" and next(openai_lines).startswith("data:")
        stopped_at = time.monotonic()
        replica.process.send_signal(signal.SIGTERM)
        openai_seen = [line for line in openai_lines if line.startswith("data:")]
        native_seen = [start, *native_events]
        replica.process.wait(timeout=grace_s + 30)
    assert time.monotonic() - stopped_at < grace_s + 10
    console = replica.console.read_text()
    assert "ended 2 generation(s) still running" in console and "timeout graceful shutdown exceeded" not in console
    assert "Traceback" not in console
    assert openai_seen[-1] == "data: [DONE]"
    assert json.loads(openai_seen[-2][5:])["error"]["code"] == "engine_stopped"
    assert native_seen[-1].event == "error" and native_seen[-1].data["code"] == "engine_stopped"
    usage = live_api.usage_by_status(account, expect_requests=2)
    assert sum(group["requests"] for group in usage.values()) == 2, usage
    with httpx.stream("GET", f"{live_api.base_url}/v1/chat/stream/{native_seen[0].data['stream_id']}",
                      headers=account.headers, timeout=30) as again:
        assert [event.data for event in events_of(again)][-1]["code"] == "engine_stopped"


# --- the database goes away for a while ----------------------------------------------------------------------------

def test_a_database_gone_for_a_while_makes_readyz_red_then_everything_recovers(
    postgres_url: str, tmp_path: Path, chat_model_dir: Path
) -> None:
    """On a PostgreSQL database of the test's own: connections refused and the open ones killed, then allowed
    again. /healthz stays 200, /readyz and requests answer 503 in the error shape, and all recovers unaided."""
    import asyncio
    import os
    import uuid

    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from db import migrate
    from db.session import create_engine
    from tests.conftest import ADMIN_PASSWORD

    name = f"faults_{uuid.uuid4().hex[:8]}"
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)

    async def admin_sql(*statements: str) -> None:
        engine = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                for statement in statements:
                    await connection.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(admin_sql(f"CREATE DATABASE {name}"))
    server = None
    try:
        migrate.upgrade(url)
        env = {key: value for key, value in os.environ.items() if not key.startswith("LLMWS_")}
        env |= {"LLMWS_DATA_DIR": str(tmp_path / "var"), "LLMWS_DATABASE_URL": url, "PYTHONUNBUFFERED": "1",
                "LLMWS_MODEL_DIRS": str(chat_model_dir.parent), "LLMWS_ADMIN_PASSWORD": ADMIN_PASSWORD}
        server = start_server(tmp_path, env, "dbgone")
        wait_ready(server)
        headers = bearer(admin_token_of(server.base_url))
        assert httpx.get(f"{server.base_url}/v1/conversations", headers=headers).status_code == 200

        asyncio.run(admin_sql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false",
                              f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        ready = httpx.get(f"{server.base_url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["checks"]["database"]["ok"] is False
        assert httpx.get(f"{server.base_url}/healthz").status_code == 200
        for _ in range(2):
            gone = httpx.post(f"{server.base_url}/auth/login", timeout=10,
                              json={"username": "admin", "password": ADMIN_PASSWORD})
            error = assert_error(gone, 503, "database_unavailable")
            assert "Traceback" not in gone.text and error["type"] == "server_error"
            assert gone.headers["Retry-After"]

        asyncio.run(admin_sql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        deadline = time.monotonic() + 10
        while httpx.get(f"{server.base_url}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "readyz stayed red after the database came back"
            time.sleep(0.2)
        assert httpx.get(f"{server.base_url}/v1/conversations", headers=headers).status_code == 200
        answer = httpx.post(f"{server.base_url}/v1/chat/completions", headers=headers, timeout=30,
                            json={"model": MODEL, "messages": HI, "max_tokens": 4})
        assert answer.status_code == 200, answer.text
        # Every failure went through the error handlers: none escaped to the server as unhandled.
        assert "Exception in ASGI application" not in server.stop()
    finally:
        if server is not None and server.process.poll() is None:
            server.stop()
        asyncio.run(admin_sql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true", f"DROP DATABASE {name} WITH (FORCE)"))
