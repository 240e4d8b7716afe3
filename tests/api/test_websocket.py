"""The WebSocket channel against a real `llmws serve`, with the `websockets` client: resume after a drop, after a
restart and on another process, multi-turn sessions, FIFO, admin-only model management, bad input."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.support.live import LLMWS, Account, LiveApi, start_server, wait_ready
from tests.support.net import free_port
from tests.support.ws import hello, inference, receive, text_of, until_done, ws_url


def uninterrupted(live_api: LiveApi, account: Account, user: str) -> str:
    with connect(ws_url(live_api.base_url)) as ws:
        hello(ws, account)
        inference(ws, user)
        return text_of(until_done(ws))


def test_a_dropped_client_resumes_every_missed_event(live_api: LiveApi) -> None:
    account = live_api.new_account("wsdrop")
    with connect(ws_url(live_api.base_url)) as ws:
        session_id = hello(ws, account)["session_id"]
        inference(ws, "Tell me about rivers.")
        seen: list[dict[str, Any]] = []
        while sum(event["type"] == "token" for event in seen) < 5:
            seen.append(receive(ws))
    time.sleep(0.5)  # the generation goes on meanwhile
    with connect(ws_url(live_api.base_url)) as ws:
        welcome = hello(ws, account, session_id=session_id, last_seq=seen[-1]["seq"])
        assert welcome["resumed"] is True and welcome["session_id"] == session_id
        rest = until_done(ws)
    events = seen + rest
    assert [event["seq"] for event in events] == list(range(events[0]["seq"], events[0]["seq"] + len(events)))
    assert events[-1]["type"] == "done"
    assert text_of(events) == uninterrupted(live_api, live_api.new_account("wsref"), "Tell me about rivers.")


def test_a_finished_answer_survives_a_restart_and_resumes_on_another_process(live_api: LiveApi,
                                                                            tmp_path: Path) -> None:
    account = live_api.new_account("wsrestart")
    other = start_server(tmp_path, live_api.env | {"LLMWS_DATA_DIR": str(tmp_path / "var")}, "other")
    try:
        wait_ready(other)
        with connect(ws_url(other.base_url)) as ws:
            session_id = hello(ws, account)["session_id"]
            inference(ws, "Name three rivers.", max_tokens=24)
            assert receive(ws)["type"] == "start"
        time.sleep(3)  # the answer finishes with nobody connected
    finally:
        other.stop()  # a graceful stop stores what is buffered
    with connect(ws_url(live_api.base_url)) as ws:
        hello(ws, account, session_id=session_id, last_seq=0)
        events = until_done(ws)
    assert [event["type"] for event in events][0] == "start" and events[-1]["type"] == "done"
    assert text_of(events) == events[-1]["text"] and events[-1]["usage"]["completion_tokens"] > 0


def test_turns_build_on_each_other_and_sessions_are_private(live_api: LiveApi) -> None:
    account, stranger = live_api.new_account("wsturns"), live_api.new_account("wsstranger")
    with connect(ws_url(live_api.base_url)) as ws:
        session_id = hello(ws, account)["session_id"]
        inference(ws, "My name is Ada.", max_tokens=8)
        first = until_done(ws)
        inference(ws, "What is my name?", max_tokens=8)
        second = until_done(ws)
    assert second[0]["input_tokens"] > first[0]["input_tokens"] + first[-1]["usage"]["completion_tokens"]
    with connect(ws_url(live_api.base_url)) as ws:
        ws.send(json.dumps({"type": "hello", "token": stranger.key, "session_id": session_id}))
        refused = receive(ws)
        assert refused["type"] == "error" and refused["code"] == "session_not_found"
        ws.send(json.dumps({"type": "ping"}))
        assert receive(ws)["type"] == "pong"


def test_one_sessions_requests_run_in_order(live_api: LiveApi) -> None:
    account = live_api.new_account("wsfifo")
    with connect(ws_url(live_api.base_url)) as ws:
        hello(ws, account)
        for name in ("first", "second"):
            ws.send(json.dumps({"type": "inference", "id": name, "prompt": f"Say {name}.",
                                "config": {"max_tokens": 20}}))
        events: list[dict[str, Any]] = []
        while sum(event["type"] == "done" for event in events) < 2:
            events.append(receive(ws))
    order = [event["request_id"] for event in events if "request_id" in event]
    assert order == sorted(order, key=["first", "second"].index)  # all of the first, then all of the second


def test_model_management_needs_the_admin_role(live_api: LiveApi) -> None:
    account = live_api.new_account("wsplain")
    with connect(ws_url(live_api.base_url)) as ws:
        hello(ws, account)
        ws.send(json.dumps({"type": "switch_model", "model": "tiny-chat"}))
        refused = receive(ws)
        assert refused["type"] == "error" and refused["code"] == "admin_required"
    with connect(ws_url(live_api.base_url)) as ws:
        ws.send(json.dumps({"type": "hello", "token": live_api.admin_token}))
        assert receive(ws)["type"] == "welcome"
        ws.send(json.dumps({"type": "switch_model", "model": "tiny-chat"}))
        events = [receive(ws)]
        while events[-1]["type"] != "model_switched":
            events.append(receive(ws))
    assert [event["type"] for event in events].count("log") >= 2
    wait_ready(live_api.server)


def test_deleting_a_model_is_for_admins_and_never_the_loaded_one(live_api: LiveApi, chat_model_dir: Path) -> None:
    doomed = chat_model_dir.parent / "zz-doomed"  # sorts after the served model, so no server would pick it
    shutil.copytree(chat_model_dir, doomed)
    try:
        with connect(ws_url(live_api.base_url)) as ws:
            hello(ws, live_api.new_account("wsdel"))
            ws.send(json.dumps({"type": "delete_model", "model": "zz-doomed"}))
            assert receive(ws)["code"] == "admin_required"
        assert doomed.is_dir()
        with connect(ws_url(live_api.base_url)) as ws:
            ws.send(json.dumps({"type": "hello", "token": live_api.admin_token}))
            assert receive(ws)["type"] == "welcome"
            ws.send(json.dumps({"type": "delete_model", "model": "tiny-chat"}))
            assert receive(ws)["code"] == "model_in_use"
            ws.send(json.dumps({"type": "delete_model", "model": "../etc"}))
            assert receive(ws)["code"] == "model_not_found"
            ws.send(json.dumps({"type": "delete_model", "model": "zz-doomed"}))
            events = [receive(ws), receive(ws)]
        assert [event["type"] for event in events] == ["log", "model_deleted"]
        assert not doomed.exists() and chat_model_dir.is_dir()
    finally:
        shutil.rmtree(doomed, ignore_errors=True)


def test_a_restricted_alias_shadowing_the_local_model_binds_requests_that_name_no_model(live_api: LiveApi) -> None:
    """An alias with the local model's name, kept to one user: to everyone else neither it nor the model behind
    it exists, whether they name it or not (native chat, WebSocket), and neither is listed to them."""
    allowed, kept_out = live_api.new_account("wsallowed"), live_api.new_account("wskeptout")
    created = httpx.post(f"{live_api.base_url}/admin/models", headers=live_api.admin, json={
        "name": "tiny-chat", "allowed_users": [allowed.user_id], "deployments": [{"provider_id": None}]})
    assert created.status_code == 201, created.text
    try:
        native = httpx.post(f"{live_api.base_url}/v1/chat", headers=kept_out.headers, timeout=30,
                            json={"message": "Hi", "max_tokens": 2})
        assert native.status_code == 404 and native.json()["error"]["code"] == "model_not_found", native.text
        with connect(ws_url(live_api.base_url)) as ws:
            assert hello(ws, kept_out)["model"] is None
            ws.send(json.dumps({"type": "list_models"}))
            listed = receive(ws)
            assert listed["current"] is None and "tiny-chat" not in [model["id"] for model in listed["models"]]
            ws.send(json.dumps({"type": "inference", "prompt": "Hi", "config": {"max_tokens": 2}}))
            assert until_done(ws)[-1]["code"] == "model_not_found"
        with connect(ws_url(live_api.base_url)) as ws:
            assert hello(ws, allowed)["model"] == "tiny-chat"
            ws.send(json.dumps({"type": "list_models"}))
            assert {"id": "tiny-chat", "backend": "gateway"} in receive(ws)["models"]
            ws.send(json.dumps({"type": "inference", "prompt": "Hi", "config": {"max_tokens": 2}}))
            assert until_done(ws)[-1]["type"] == "done"
    finally:
        deleted = httpx.delete(f"{live_api.base_url}/admin/models/{created.json()['id']}", headers=live_api.admin)
        assert deleted.status_code in (200, 204), deleted.text


def test_bad_input_gets_errors_and_the_socket_stays_usable(live_api: LiveApi) -> None:
    account = live_api.new_account("wsbad")
    with connect(ws_url(live_api.base_url), max_size=None) as ws:
        ws.send("not json")
        assert receive(ws)["code"] == "invalid_json"
        ws.send(json.dumps({"type": "inference", "prompt": "too early"}))
        assert receive(ws)["code"] == "hello_first"
        ws.send(json.dumps({"type": "hello", "token": "sk-llmws-not-a-key"}))
        assert receive(ws)["code"] == "invalid_api_key"
        ws.send(json.dumps({"type": "hello"}))
        assert receive(ws)["code"] == "missing_credentials"
        hello(ws, account)
        ws.send(json.dumps({"type": "teleport"}))
        assert receive(ws)["code"] == "unknown_type"
        ws.send(json.dumps({"type": "inference"}))
        assert receive(ws)["code"] == "missing_field"
        ws.send(json.dumps({"type": "config", "config": {"temperature": -1}}))
        assert receive(ws)["code"] == "invalid_parameter"
        ws.send(json.dumps({"type": "config", "config": {"max_tokens": 8, "max_new_tokens": 9}}))
        assert receive(ws)["code"] == "invalid_value"
        for bad_id in ("x" * 65, "a\x00b", "line\nbreak", ["1"]):  # it would be echoed and logged as given
            ws.send(json.dumps({"type": "inference", "id": bad_id, "prompt": "hi"}))
            assert receive(ws)["code"] == "invalid_value", bad_id
        ws.send(json.dumps({"type": "ping", "pad": "x" * 2_000_000}))
        assert receive(ws)["code"] == "message_too_large"
        for _ in range(1000):
            ws.send(json.dumps({"type": "ping"}))
        answers = [receive(ws)["type"] for _ in range(1000)]
        assert answers.count("pong") < 1000 and set(answers) == {"pong", "error"}
        time.sleep(0.5)
        ws.send(json.dumps({"type": "ping"}))
        assert receive(ws)["type"] == "pong"


@pytest.fixture(autouse=True)
def _engine_idle_after(live_api: LiveApi) -> Any:
    yield
    live_api.wait_engine_idle(within_s=30)


def llmws_chat(live_api: LiveApi, account: Account, *args: str, stdin: str | None = None
               ) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("LLMWS_")}
    return subprocess.run([LLMWS, "chat", "--url", live_api.base_url, "--token", account.key, *args], input=stdin,
                          capture_output=True, text=True, timeout=120, env=env)


def test_llmws_chat_answers_a_prompt(live_api: LiveApi) -> None:
    account = live_api.new_account("cli")
    done = llmws_chat(live_api, account, "--prompt", "hi", "--temperature", "0", "--max-tokens", "12")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and "error" not in done.stdout
    refused = llmws_chat(live_api, Account(0, "nobody", "sk-llmws-wrong", 0), "--prompt", "hi")
    assert refused.returncode == 1 and "invalid_api_key" in refused.stderr


def test_llmws_chat_interactive_commands(live_api: LiveApi) -> None:
    account = live_api.new_account("cli2")
    script = "Tell me about the sea.\n/session\n/resources\n/models\n/config temperature=0 max_tokens=8\n/quit\n"
    done = llmws_chat(live_api, account, "--max-tokens", "8", stdin=script)
    assert done.returncode == 0, done.stderr
    session = done.stdout.split("session ", 1)[1].split()[0]
    assert f"session {session} (last event" in done.stdout
    assert '"cpu"' in done.stdout and "tiny-chat (local)" in done.stdout
    assert '{"temperature": 0, "max_tokens": 8}' in done.stdout


class Tmux:
    """A terminal the test types into and reads, as a person would (its own tmux server, so nothing else is seen)."""

    def __init__(self, command: list[str]) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("tmux is needed for the interactive `llmws chat` test (apt install tmux)")
        self.socket = f"llmws-test-{uuid.uuid4().hex[:8]}"
        self.run("new-session", "-d", "-s", "chat", "-x", "200", "-y", "80", shlex.join(command))

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True,
                              timeout=30).stdout

    def type(self, line: str) -> None:
        self.run("send-keys", "-t", "chat", "-l", line)
        self.run("send-keys", "-t", "chat", "Enter")

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "chat", "-S", "-500")

    def wait_for(self, predicate: Callable[[str], bool], what: str, timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        while not predicate(screen := self.screen()):
            if time.monotonic() > deadline:
                pytest.fail(f"the terminal never showed {what}:\n{screen}")
            time.sleep(0.2)
        return screen

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


def test_llmws_chat_in_a_terminal_survives_the_server_restarting_under_it(live_api: LiveApi,
                                                                          tmp_path: Path) -> None:
    account = live_api.new_account("cli3")
    port = free_port()
    env = live_api.env | {"LLMWS_DATA_DIR": str(tmp_path / "var")}
    server = start_server(tmp_path, env, "before", port=port)
    terminal = Tmux([LLMWS, "chat", "--url", server.base_url, "--token", account.key, "--max-tokens", "8"])
    try:
        wait_ready(server)
        terminal.wait_for(lambda text: "/help for commands" in text, "the banner")
        terminal.type("Hello there.")
        terminal.wait_for(lambda text: sum(line.startswith(">") for line in text.splitlines()) >= 2,
                          "an answer and a new prompt")
        terminal.type("/resources")
        terminal.wait_for(lambda text: '"cpu"' in text, "the resources")
        terminal.type("/session")
        terminal.wait_for(lambda text: "(last event" in text, "the session")
        server.stop()
        server = start_server(tmp_path, env, "after", port=port)
        wait_ready(server)
        terminal.type("And again?")
        terminal.type("/session")
        screen = terminal.wait_for(lambda text: text.count("(last event") >= 2, "the session after the restart")
    finally:
        terminal.close()
        server.stop()
    sessions = [line.split("session ")[1].split()[0] for line in screen.splitlines() if "(last event" in line]
    assert sessions[0] == sessions[1]  # the same session, resumed after the restart
    last_events = [int(line.split("last event ")[1].split(")")[0]) for line in screen.splitlines()
                   if "(last event" in line]
    assert last_events[1] > last_events[0]  # and the question after the restart was answered in it
    assert "error:" not in screen  # how the client reports a failed request


def test_a_client_written_from_the_seed_documents_passes_its_whole_flow(live_api: LiveApi,
                                                                        chat_model_dir: Path) -> None:
    """The seed's client, from its own documents only (seeds 001 "Protocol" and "Configuration", 000's message
    table), with one addition: a credential in `hello`."""
    with connect(ws_url(live_api.base_url)) as ws:
        ws.send(json.dumps({"type": "hello", "token": live_api.admin_token}))
        session_id = receive(ws)["session_id"]
        ws.send(json.dumps({"type": "config", "config": {"max_new_tokens": 12, "temperature": 0}}))
        assert receive(ws)["type"] == "config_ack"
        ws.send(json.dumps({"type": "inference", "prompt": {"system": "You are helpful", "user": "Hello"}}))
        start = receive(ws)
        assert start["type"] == "start" and start["tokens_in"] > 0 and start["max_tokens"] == 12, start
        pieces, event = [], receive(ws)
        while event["type"] == "token":
            pieces.append(event["data"])
            event = receive(ws)
        assert event["type"] == "done" and 0 < event["total_tokens"] <= 12 and "".join(pieces), event
        ws.send(json.dumps({"type": "ack"}))  # the seed's: no seq, clears the whole buffer
        cleared = receive(ws)
        assert cleared["type"] == "ack_received" and cleared["removed"] == len(pieces) + 2, cleared
    with connect(ws_url(live_api.base_url)) as ws:  # resumed from the start: nothing is left to replay
        # The seed's "Connect with session" message has no type.
        ws.send(json.dumps({"session_id": session_id, "token": live_api.admin_token}))
        assert receive(ws)["type"] == "welcome"
        ws.send(json.dumps({"type": "ping"}))
        assert receive(ws)["type"] == "pong"
        ws.send(json.dumps({"type": "list_models"}))
        assert receive(ws)["models"]
        ws.send(json.dumps({"type": "get_resources"}))
        assert receive(ws)["type"] == "resources"
        for outside in ("../../etc/passwd", "/etc", str(chat_model_dir.parent / ".." / "tiny-chat")):
            ws.send(json.dumps({"type": "switch_model", "model_path": outside}))
            assert receive(ws)["code"] == "model_not_found", outside
        ws.send(json.dumps({"type": "switch_model", "model_path": f"{chat_model_dir.parent.name}/tiny-chat"}))
        events = [receive(ws)]
        while events[-1]["type"] != "model_switched":
            events.append(receive(ws))
        assert events[-1]["model"] == "tiny-chat" and "error" not in [event["type"] for event in events]
        wait_ready(live_api.server)
        ws.send(json.dumps({"type": "inference", "prompt": {"system": "You are helpful", "user": "sea " * 5000}}))
        refused = receive(ws)
        assert refused["type"] == "error" and refused["code"] == "context_length_exceeded", refused
        assert refused["max_context"] <= 4096 < refused["input_length"] == refused["input_tokens"]
        assert refused["message"]


def test_two_users_choosing_the_same_id_do_not_cancel_each_other(live_api: LiveApi) -> None:
    first, second = live_api.new_account("wsid1"), live_api.new_account("wsid2")
    with connect(ws_url(live_api.base_url)) as theirs, connect(ws_url(live_api.base_url)) as mine:
        hello(theirs, first)
        hello(mine, second)
        ask = {"type": "inference", "id": "1", "prompt": "Tell me about rivers.",
               "config": {"temperature": 0, "max_tokens": 400}}
        mine.send(json.dumps(ask))
        assert [receive(mine)["type"], receive(mine)["type"]] == ["start", "token"]
        theirs.send(json.dumps(ask))
        assert [receive(theirs)["type"], receive(theirs)["type"]] == ["start", "token"]
        theirs.send(json.dumps({"type": "cancel"}))
        assert until_done(theirs)[-1]["finish_reason"] == "cancelled"
        mine_done = until_done(mine)[-1]
    assert mine_done["type"] == "done" and mine_done["request_id"] == "1", mine_done
    assert mine_done["finish_reason"] in {"length", "stop"}, mine_done
