"""The live API's WebSocket channel through the sync `websockets` client: its URL, a hello, an inference and
reading events up to the end of one."""

from __future__ import annotations

import json
from typing import Any

from websockets.sync.client import ClientConnection

from tests.support.live import Account

GREEDY = {"temperature": 0, "max_tokens": 60}


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://") + "/v1/ws"


def receive(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=30))


def hello(ws: ClientConnection, account: Account, **extra: Any) -> dict[str, Any]:
    ws.send(json.dumps({"type": "hello", "token": account.key, **extra}))
    welcome = receive(ws)
    assert welcome["type"] == "welcome", welcome
    return welcome


def until_done(ws: ClientConnection, events: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    events = events if events is not None else []
    while not events or events[-1]["type"] not in {"done", "error"}:
        events.append(receive(ws))
    return events


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(event["text"] for event in events if event["type"] == "token")


def inference(ws: ClientConnection, user: str, **config: Any) -> None:
    ws.send(json.dumps({"type": "inference", "prompt": {"system": "Be brief.", "user": user},
                        "config": {**GREEDY, **config}}))
