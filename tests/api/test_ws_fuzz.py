"""Fuzzing the WebSocket channel's message parser on a real server: every malformed frame gets an ``error``
message, and the connection keeps working after it (a ``ping`` still gets its ``pong``)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from tests.support.live import Account, LiveApi
from tests.support.ws import hello, receive, ws_url

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                      HealthCheck.too_slow])
JSON_LEAF = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
             | st.text(max_size=30) | st.just("\ud800") | st.just("\u202e\u200d\U0001f600"))
JSON = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
MESSAGE_TYPES = ["hello", "inference", "config", "ack", "cancel", "get_resources", "list_models", "switch_model",
                 "download_model", "delete_model"]


@pytest.fixture(scope="module")
def account(live_api: LiveApi) -> Account:
    return live_api.new_account("wsfuzz")


def replies_until_pong(ws: ClientConnection) -> list[dict[str, Any]]:
    """What arrives before the answer to a ping: the connection is alive and in order."""
    ws.send(json.dumps({"type": "ping"}))
    replies, deadline = [], time.monotonic() + 30
    while (message := receive(ws))["type"] != "pong":
        replies.append(message)
        assert time.monotonic() < deadline, "no pong"
    return replies


def reply_to(live_api: LiveApi, frame: str, account: Account | None = None) -> dict[str, Any] | None:
    """The first reply to ``frame`` (None when there is none: ``cancel`` with nothing running answers nothing)."""
    with connect(ws_url(live_api.base_url), max_size=None) as ws:
        if account is not None:
            hello(ws, account)
        ws.send(frame)
        replies = replies_until_pong(ws)
        if account is not None:  # a generation the frame started goes on after a disconnect; end it here
            ws.send(json.dumps({"type": "cancel", "all": True}))
    for reply in replies:
        assert isinstance(reply, dict) and isinstance(reply.get("type"), str), reply
    return replies[0] if replies else None


def assert_error(answer: dict[str, Any] | None) -> None:
    assert answer is not None and answer["type"] == "error", answer
    assert isinstance(answer["code"], str) and isinstance(answer["message"], str), answer


@FUZZ
@given(frame=st.text(max_size=200))
def test_arbitrary_text_gets_an_error(live_api: LiveApi, frame: str) -> None:
    try:
        parsed = json.loads(frame)
    except ValueError:
        parsed = None
    assume(not (isinstance(parsed, dict) and parsed.get("type") == "ping"))
    assert_error(reply_to(live_api, frame))


@FUZZ
@given(value=JSON)
def test_json_without_a_known_type_gets_an_error(live_api: LiveApi, value: Any) -> None:
    assume(not (isinstance(value, dict) and value.get("type") == "ping"))
    assert_error(reply_to(live_api, json.dumps(value)))


@FUZZ
@given(kind=st.sampled_from(MESSAGE_TYPES), fields=st.dictionaries(st.sampled_from(
    ["token", "session_id", "last_seq", "prompt", "messages", "config", "seq", "model", "name", "source"]), JSON))
def test_known_types_with_junk_before_hello_get_an_error(live_api: LiveApi, kind: str, fields: dict) -> None:
    assert_error(reply_to(live_api, json.dumps({**fields, "type": kind})))


@FUZZ
@given(kind=st.sampled_from(MESSAGE_TYPES[1:]), fields=st.dictionaries(st.sampled_from(
    ["prompt", "messages", "config", "seq", "model", "name", "source", "temperature", "max_tokens", "system"]),
    JSON, min_size=1))
def test_junk_after_hello_keeps_the_connection(live_api: LiveApi, account: Account, kind: str,
                                               fields: dict) -> None:
    answer = reply_to(live_api, json.dumps({**fields, "type": kind}), account)
    assert answer is not None or kind == "cancel"


@pytest.mark.parametrize("frame", [
    "[" * 100_000, '{"type": ' * 50_000 + "1" + "}" * 50_000, '{"type": "ping", "x": "\\ud800"}',
    '{"type": "\\udfff"}', '{"type": "config", "system": "\\ud83d"}', "\x00", '{"type": "ping"' + " " * 200_000])
def test_hostile_frames_get_an_error(live_api: LiveApi, account: Account, frame: str) -> None:
    assert_error(reply_to(live_api, frame, account))
