"""What the chat page knows apart from its widgets: the choices offered (models, prompts, projects), the settings
of the next turn, the conversation it continues, and the generation in flight.

Testable without a browser: ``generate`` is an async iterator of the reply as it grows, straight from the API's
SSE stream (resumed by the client when a connection drops), and ``stop`` cancels the generation on the server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import param

from ui.client import ApiClient, ApiError
from ui.views.tool_calls import with_calls

Json = dict[str, Any]
NO_PROMPT = "(no system prompt)"
NO_PROJECT = "(no project)"
REPLY_SAVED_WAIT_S = 3.0


@dataclass
class Reply:
    """One assistant reply as the stream has told it so far."""

    text: str = ""
    model: str | None = None
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None
    started: bool = False  # the server took the turn (and stored it)
    tool_calls: list[Json] = field(default_factory=list)  # OpenAI's shape, arguments growing as they stream

    def add_call_piece(self, piece: Json) -> None:
        """A ``tool_call`` event: the first of a call names it, every one carries a piece of its arguments."""
        if "id" in piece:
            self.tool_calls.append({"id": piece["id"], "type": "function",
                                    "function": {"name": piece.get("name") or "", "arguments": ""}})
        if self.tool_calls:
            self.tool_calls[piece.get("index", -1)]["function"]["arguments"] += piece.get("arguments", "")

    @property
    def markdown(self) -> str:
        """What the reply shows: its text, then the tools it called (name and arguments)."""
        return with_calls(self.text, self.tool_calls)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None or self.error is not None

    def metrics_line(self) -> str:
        """What goes under the reply: time to first token and speed, once the stream has sent them."""
        parts = []
        if self.ttft_ms is not None:
            parts.append(f"TTFT {self.ttft_ms:.0f} ms")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:.1f} tokens/s")
        if self.completion_tokens is not None:
            parts.append(f"{self.completion_tokens} tokens")
        if self.finish_reason == "cancelled":
            parts.append("stopped")
        elif self.finish_reason == "length":
            parts.append("hit max tokens")
        elif self.finish_reason == "tool_calls":
            parts.append("called a tool")
        return " · ".join(parts)


def default_model(models: list[Json]) -> str | None:
    """Without a preference, the model this server runs itself (what a chat without a model gets too), else the
    first listed: an alias may lead to an upstream that is down, the local model answers whenever it is loaded."""
    local = next((model["id"] for model in models if model.get("backend") == "local"), None)
    return local or (models[0]["id"] if models else None)


def model_label(model: Json) -> str:
    """A model as the picker shows it: its name, the backend serving it, and its context size."""
    meta = model.get("metadata") or {}
    context = meta.get("max_context") or meta.get("context_length") or meta.get("context_window")
    label = f"{model['id']} · {model.get('backend', '?')}"
    return f"{label} · {context:,} ctx" if isinstance(context, int) else label


class ToolsInvalid(ValueError):
    """The tools field is not a JSON list."""


class ChatState(param.Parameterized):
    model = param.String(default=None, allow_None=True, doc="The model of the next turn; None: the server's.")
    preset_id = param.Integer(default=None, allow_None=True, doc="A prompt library entry used as system prompt.")
    project_id = param.String(default=None, allow_None=True, doc="The project a new conversation starts in.")
    temperature = param.Number(default=0.7, bounds=(0, 2))
    max_tokens = param.Integer(default=512, bounds=(1, None))
    tools_json = param.String(default="", doc="Tools offered to the model: OpenAI's list, as JSON; empty: none.")
    tool_choice = param.Selector(default="auto", objects=["auto", "required", "none"])
    parallel_tool_calls = param.Boolean(default=True, doc="Whether one reply may make several calls.")
    conversation_id = param.String(default=None, allow_None=True, doc="Set by the first turn's start event.")
    stream_id = param.String(default=None, allow_None=True, doc="The generation in flight.")
    generating = param.Boolean(default=False)
    model_options = param.Dict(default={})
    prompt_options = param.Dict(default={NO_PROMPT: None})
    project_options = param.Dict(default={NO_PROJECT: None})

    def __init__(self, client: ApiClient, **params: Any) -> None:
        super().__init__(**params)
        self.client = client
        self.sent: list[str] = []  # this conversation's user turns as typed (before any preset template)
        self._stop_requested = False

    # Choices and defaults.
    def load(self) -> list[str]:
        """Fill the pickers and apply the user's preferences; returns what could not be loaded, to show."""
        problems = []
        try:
            models = self.client.models()
            self.model_options = {model_label(m): m["id"] for m in models}
            if self.model not in self.model_options.values():
                self.model = default_model(models)
        except ApiError as exc:
            problems.append(f"Models: {exc.message}")
        try:
            prompts = self.client.prompts()["data"]
            self.prompt_options = {NO_PROMPT: None} | {f"{p['name']}" + (" (shared)" if p["is_shared"] else ""):
                                                      p["id"] for p in prompts}
        except ApiError as exc:
            problems.append(f"Prompts: {exc.message}")
        try:
            projects = self.client.projects(limit=200)["data"]
            self.project_options = {NO_PROJECT: None} | {p["name"]: p["id"] for p in projects}
        except ApiError as exc:
            problems.append(f"Projects: {exc.message}")
        self.apply_preferences()
        return problems

    def apply_preferences(self) -> None:
        try:
            preferences = self.client.preferences()
        except ApiError:
            return  # an API without preferences: the page's defaults stand
        if preferences.get("default_model") in self.model_options.values():
            self.model = preferences["default_model"]
        if preferences.get("temperature") is not None:
            self.temperature = float(preferences["temperature"])
        if preferences.get("max_tokens") is not None:
            self.max_tokens = int(preferences["max_tokens"])
        if preferences.get("system_prompt_id") in self.prompt_options.values():
            self.preset_id = preferences["system_prompt_id"]

    # One turn.
    def request_body(self, message: str) -> Json:
        body: Json = {"message": message, "model": self.model, "preset_id": self.preset_id,
                      "temperature": self.temperature, "max_tokens": self.max_tokens}
        tools = self.tools()
        if tools:
            body["tools"], body["tool_choice"] = tools, self.tool_choice
            body["parallel_tool_calls"] = self.parallel_tool_calls
        if self.conversation_id is not None:
            body["conversation_id"] = self.conversation_id
        elif self.project_id is not None:
            body["project_id"] = self.project_id
        return {name: value for name, value in body.items() if value is not None}

    def tools(self) -> list[Json]:
        """The tools field read: a JSON list (the API checks each tool); ``ToolsInvalid`` when it is not one."""
        if not self.tools_json.strip():
            return []
        try:
            tools = json.loads(self.tools_json)
        except ValueError as exc:
            raise ToolsInvalid(f"Tools must be JSON: {exc}") from None
        if not isinstance(tools, list):
            raise ToolsInvalid("Tools must be a JSON list, as OpenAI's tools are")
        return tools

    async def generate(self, message: str) -> AsyncIterator[Reply]:
        """The reply to ``message``, yielded after every event; the last one is finished (done or error)."""
        reply = Reply()
        self.generating, self.stream_id, self._stop_requested = True, None, False
        try:
            body = self.request_body(message)
        except ToolsInvalid as exc:
            reply.error = str(exc)
            self.generating = False
            yield reply
            return
        try:
            async for event in self.client.chat_stream(body):
                data = event.json()
                if event.event == "start":
                    self.conversation_id = data.get("conversation_id") or self.conversation_id
                    self.sent.append(message)
                    self.stream_id, reply.model, reply.started = data.get("stream_id"), data.get("model"), True
                    if self._stop_requested:  # Stop was pressed before the server had named the stream
                        await self.stop()
                elif event.event == "token":
                    reply.text += data.get("text", "")
                elif event.event == "tool_call":
                    reply.add_call_piece(data)
                elif event.event == "metrics":
                    reply.ttft_ms, reply.tokens_per_s = data.get("ttft_ms"), data.get("tokens_per_s")
                    reply.completion_tokens = data.get("completion_tokens")
                elif event.event == "done":
                    reply.finish_reason = data.get("finish_reason") or "stop"
                elif event.event == "error":
                    reply.error = data.get("message") or "the generation failed"
                yield reply
        except ApiError as exc:
            reply.error = exc.message
            yield reply
        finally:
            self.generating, self.stream_id = False, None

    async def stop(self) -> None:
        """Cancel the generation on the server (closing the stream would not: it is resumable). The stream then
        ends as usual, with what was generated so far."""
        self._stop_requested = True
        if self.stream_id is not None:
            await self.client.cancel_stream(self.stream_id)

    # The conversation.
    def new_chat(self) -> None:
        self.conversation_id, self.sent = None, []

    async def take_back_last(self) -> str | None:
        """Remove the last exchange from the conversation (regenerate, edit-last); returns its user text as typed.

        The server saves a reply just after its stream ends, so wait for it first: taken back before it lands, the
        reply would be saved after the earlier turns instead."""
        if self.generating or self.conversation_id is None:
            return None
        deadline = time.monotonic() + REPLY_SAVED_WAIT_S
        while time.monotonic() < deadline:
            messages = self.client.conversation(self.conversation_id)["messages"]
            if not messages or messages[-1]["role"] != "user":
                break
            await asyncio.sleep(0.1)
        removed = self.client.remove_last_exchange(self.conversation_id)
        typed = self.sent.pop() if self.sent else None
        return typed or next((m["content"] for m in removed if m["role"] == "user"), None)
