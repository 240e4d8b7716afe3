"""A small WebSocket client for LLMWS (the protocol: docs/websocket.md), the one `llmws chat` is built on.

    client = ChatClient("ws://127.0.0.1:8000/v1/ws", token="sk-llmws-…")
    client.connect()
    for piece in client.ask("What is the capital of France?", temperature=0):
        print(piece, end="", flush=True)

It keeps the session id and the last sequence number it saw; when the connection drops it reconnects by itself
(with back-off, up to ``reconnect_for_s``) and resumes the session from there, so an answer is never cut or
repeated.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect


class ChatError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code


class ChatClient:
    def __init__(self, url: str, *, token: str, session_id: str | None = None, reconnect_for_s: float = 60.0,
                 receive_timeout_s: float = 600.0) -> None:
        self.url = url
        self.token = token
        self.session_id = session_id
        self.last_seq = 0
        self.reconnect_for_s = reconnect_for_s
        self.receive_timeout_s = receive_timeout_s
        self.welcome: dict[str, Any] = {}
        self.last_done: dict[str, Any] = {}
        self._ws: ClientConnection | None = None
        self._replies: list[dict[str, Any]] = []  # connection replies received while waiting for session events

    def connect(self) -> dict[str, Any]:
        """Open the socket and say hello (resuming the session from ``last_seq`` when there is one)."""
        self._ws = connect(self.url, max_size=None, open_timeout=10)
        hello: dict[str, Any] = {"type": "hello", "token": self.token, "last_seq": self.last_seq}
        if self.session_id:
            hello["session_id"] = self.session_id
        self._ws.send(json.dumps(hello))
        answer = json.loads(self._ws.recv(timeout=30))
        if answer.get("type") != "welcome":
            raise ChatError(answer.get("code", "refused"), answer.get("message", "hello was refused"))
        self.welcome, self.session_id = answer, answer["session_id"]
        return answer

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    def send(self, message: dict[str, Any]) -> None:
        while True:
            try:
                assert self._ws is not None, "connect() first"
                self._ws.send(json.dumps(message))
                return
            except ConnectionClosed:
                self._reconnect()

    def receive(self) -> dict[str, Any]:
        """The next message; reconnects and resumes when the connection drops."""
        while True:
            try:
                assert self._ws is not None, "connect() first"
                message = json.loads(self._ws.recv(timeout=self.receive_timeout_s))
            except ConnectionClosed:
                self._reconnect()
                continue
            seq = message.get("seq")
            if isinstance(seq, int):
                if seq <= self.last_seq:
                    continue  # already seen (a replay overlapping what arrived before the drop)
                self.last_seq = seq
            return message

    def _reconnect(self) -> None:
        deadline, pause = time.monotonic() + self.reconnect_for_s, 0.2
        while True:
            try:
                self.close()
                self.connect()
                return
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 3.0)

    def request(self, message: dict[str, Any], reply_type: str) -> dict[str, Any]:
        """Send a control message and return its reply (session events arriving meanwhile are passed over)."""
        self.send(message)
        while True:
            answer = self.receive()
            if answer.get("type") in {reply_type, "error"} and "seq" not in answer:
                if answer["type"] == "error":
                    raise ChatError(answer.get("code", "error"), answer.get("message", ""))
                return answer

    def ask(self, prompt: str, *, system: str | None = None, **config: Any) -> Iterator[str]:
        """Send one turn and yield the answer's text as it streams; the final ``done`` is in ``self.last_done``."""
        request_id = uuid.uuid4().hex
        message: dict[str, Any] = {"type": "inference", "id": request_id,
                                   "prompt": {"system": system, "user": prompt} if system else prompt}
        if config:
            message["config"] = config
        self.send(message)
        while True:
            event = self.receive()
            if event.get("request_id") not in (request_id, None) and event.get("type") != "error":
                continue
            if event["type"] == "token":
                yield event["text"]
            elif event["type"] == "done":
                self.last_done = event
                return
            elif event["type"] == "error":
                raise ChatError(event.get("code", "error"), event.get("message", ""))

    def ack(self) -> None:
        if self.last_seq:
            self.request({"type": "ack", "seq": self.last_seq}, "ack_received")

    def resources(self) -> dict[str, Any]:
        return self.request({"type": "get_resources"}, "resources")

    def models(self) -> dict[str, Any]:
        return self.request({"type": "list_models"}, "models_list")

    def configure(self, **config: Any) -> dict[str, Any]:
        return self.request({"type": "config", "config": config}, "config_ack")

    def download_model(self, source: str, name: str | None = None, revision: str | None = None
                       ) -> Iterator[dict[str, Any]]:
        """The download's ``download_started``, ``progress`` and ``log`` events, ending with ``download_finished``
        (whose ``status`` says whether it completed)."""
        self.send({"type": "download_model", "source": source,
                   **({"name": name} if name else {}), **({"revision": revision} if revision else {})})
        while True:
            event = self.receive()
            if event["type"] == "error":
                raise ChatError(event.get("code", "error"), event.get("message", ""))
            if event["type"] in {"download_started", "progress", "log", "download_finished"}:
                yield event
                if event["type"] == "download_finished":
                    return

    def switch_model(self, model: str) -> Iterator[dict[str, Any]]:
        """The switch's ``log`` events, ending with ``model_switched``."""
        self.send({"type": "switch_model", "model": model})
        while True:
            event = self.receive()
            if event["type"] == "error":
                raise ChatError(event.get("code", "error"), event.get("message", ""))
            if event["type"] in {"log", "model_switched"}:
                yield event
                if event["type"] == "model_switched":
                    return
