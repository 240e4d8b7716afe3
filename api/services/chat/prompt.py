"""Prompt assembly, once for every protocol: the system prompt (the request's, else the conversation's, else the
project's), the earlier turns, the new one; and, for a conversation the server keeps, trimming to the model's
context from the oldest end. A stateless OpenAI request is not trimmed: the client sent every message and gets a
400 ``context_length_exceeded`` when they do not fit, as OpenAI answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from api.services.chat.turn import Message
from engine.errors import ContextTooLong

T = TypeVar("T")


class TokenCounter(Protocol):
    """What trimming needs of the local model (``engine.local.LocalModel`` has both)."""

    def count_tokens(self, texts: list[str]) -> list[int]: ...

    def encode_messages(self, messages: list[dict[str, str]]) -> list[int]: ...


def system_prompt(*candidates: str | None) -> str | None:
    """The first system prompt given, most specific first (request, conversation, project)."""
    return next((candidate for candidate in candidates if candidate), None)


@dataclass(frozen=True)
class Prompt:
    head: tuple[Message, ...]  # the system prompt, when there is one
    history: tuple[Message, ...]  # the earlier turns, oldest first: what trimming may drop
    new: tuple[Message, ...]  # the new turn

    @classmethod
    def assemble(cls, system: str | None, history: Sequence[Message], new: Sequence[Message]) -> Prompt:
        return cls((Message.of("system", system),) if system else (), tuple(history), tuple(new))

    @property
    def messages(self) -> tuple[Message, ...]:
        return self.head + self.history + self.new

    def without_oldest(self, count: int) -> Prompt:
        return Prompt(self.head, self.history[count:], self.new)


def with_system_prompt(messages: tuple[Message, ...], system: str) -> tuple[Message, ...]:
    """``messages`` with ``system`` first, unless they bring a system prompt of their own."""
    if any(message.role == "system" for message in messages):
        return messages
    return (Message.of("system", system), *messages)


def template_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Messages as a text model's chat template takes them, with an assistant's tool calls and a tool result's
    call id in OpenAI's shape (the engine renders them: engine/tool_format.py)."""
    return [template_message(message) for message in messages]


def template_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.text}
    if message.tool_calls:
        out["tool_calls"] = [{"id": call.id, "type": "function",
                              "function": {"name": call.name, "arguments": call.arguments}}
                             for call in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


async def fitted(prompt: Prompt, start: Callable[[Prompt], Awaitable[T]], counter: TokenCounter | None) -> T:
    """``start(prompt)``, with the oldest earlier turns dropped (whole exchanges) until it fits the context; a
    prompt whose new turn alone does not fit raises ``ContextTooLong``. The backend says what does not fit, so
    this costs nothing when everything does."""
    costs: list[float] | None = None  # each history message's tokens, counted once
    while True:
        try:
            return await start(prompt)
        except ContextTooLong as exc:
            if not prompt.history:
                raise
            if costs is None:
                costs = await history_costs(counter, prompt, exc.input_tokens)
            drop = oldest_to_drop(costs, exc.input_tokens - (exc.max_context - 1),
                                  [message.role for message in prompt.history])
            prompt, costs = prompt.without_oldest(drop), costs[drop:]


async def history_costs(counter: TokenCounter | None, prompt: Prompt, prompt_tokens: int) -> list[float]:
    """What each earlier message adds to the prompt, in tokens: its text counted once, plus its share of the role
    markers around it (what the whole prompt has beyond the new turn and the texts, spread evenly). Counting
    once keeps trimming linear in the history's length; re-tokenizing the prompt per dropped exchange was not."""
    if counter is None:  # the model went away meanwhile: nothing to count with, so the history goes
        return [0.0] * len(prompt.history)
    counts = await asyncio.to_thread(counter.count_tokens, [counted_text(message) for message in prompt.history])
    new_turn = len(await asyncio.to_thread(counter.encode_messages, template_messages(prompt.head + prompt.new)))
    markers = max(0, prompt_tokens - new_turn - sum(counts)) / len(prompt.history)
    return [count + markers for count in counts]


def counted_text(message: Message) -> str:
    """What of a message its template renders as text: its text, and its tool calls' names and arguments."""
    return message.text + "".join(call.name + call.arguments for call in message.tool_calls)


def oldest_to_drop(costs: list[float], excess: float, roles: list[str]) -> int:
    """How many of the oldest messages to drop, whole exchanges at a time (an exchange runs from a user turn to
    the next: the reply, and any tool calls and results in between, go together, so no tool result is left
    without its call), for at least ``excess`` tokens to go (at least one exchange: the prompt did not fit)."""
    freed = 0.0
    for cut in range(1, len(costs) + 1):
        freed += costs[cut - 1]
        if freed >= excess and (cut == len(costs) or roles[cut] == "user"):
            return cut
    return len(costs)
