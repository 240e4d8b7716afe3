"""A chat turn as every protocol means it: messages whose content is a list of parts, the assistant's tool calls
and the tools' results, the tools offered, the response format, sampling and logprobs. Frozen: a protocol builds
one, and everything after it only reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

from engine.requests import SamplingParams

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class TextPart:
    kind: ClassVar[str] = "text"
    text: str


@dataclass(frozen=True)
class ImagePart:
    kind: ClassVar[str] = "image"
    url: str  # an http(s) address or a data: URL
    detail: str | None = None


@dataclass(frozen=True)
class AudioPart:
    kind: ClassVar[str] = "audio"
    data: str  # base64
    format: str


@dataclass(frozen=True)
class FilePart:
    kind: ClassVar[str] = "file"
    file_id: str | None = None
    data: str | None = None  # base64, or a data: URL
    filename: str | None = None


Part = TextPart | ImagePart | AudioPart | FilePart


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass(frozen=True)
class Message:
    role: Role
    parts: tuple[Part, ...] = ()
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant's
    tool_call_id: str | None = None  # a tool result's: the call it answers

    @classmethod
    def of(cls, role: Role, text: str) -> Message:
        return cls(role, (TextPart(text),))

    @property
    def text(self) -> str:
        """The text parts, joined (what a text-only backend sees)."""
        return "".join(part.text for part in self.parts if isinstance(part, TextPart))

    @property
    def text_only(self) -> bool:
        return all(isinstance(part, TextPart) for part in self.parts)


@dataclass(frozen=True)
class Tool:
    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None  # a JSON schema


@dataclass(frozen=True)
class ResponseFormat:
    """What the answer must match: OpenAI's types, and the ones vLLM's ``structured_outputs`` adds (a regular
    expression or a Lark grammar in ``text``, exact ``choices``). ``param`` is the field a refusal names."""

    type: Literal["text", "json_object", "json_schema", "regex", "choice", "grammar"]
    json_schema: Mapping[str, Any] | None = None  # {"name", "schema", "strict"}
    text: str | None = None
    choices: tuple[str, ...] = ()
    param: str = "response_format"


@dataclass(frozen=True)
class Sampling:
    """What one layer (the request, an alias, a model, the server) says about sampling; None: it says nothing,
    and the next layer down decides (`api/services/chat/sampling.py`)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    n: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Sampling:
        """The layer a mapping describes (an alias's defaults, a session's config): the names it does not know are
        not sampling (a system prompt, a model) and are left out."""
        known = {item.name for item in fields(cls)}
        given = {name: value for name, value in values.items() if name in known and value is not None}
        if isinstance(given.get("stop"), str):
            given["stop"] = (given["stop"],)
        elif isinstance(given.get("stop"), list):
            given["stop"] = tuple(given["stop"])
        return cls(**given)

    @classmethod
    def exactly(cls, params: SamplingParams) -> Sampling:
        """A layer that settles every field as ``params`` has it."""
        return cls(**{item.name: getattr(params, item.name) for item in fields(cls)})

    def given(self) -> dict[str, Any]:
        return {item.name: getattr(self, item.name) for item in fields(self) if getattr(self, item.name) is not None}


@dataclass(frozen=True)
class Turn:
    """What a caller asks for. ``prompt`` is for a plain completion (text continued as it is, no chat template);
    otherwise ``messages`` is the whole conversation the model sees, system prompt first when there is one."""

    messages: tuple[Message, ...] = ()
    prompt: str | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: str | Mapping[str, Any] | None = None  # "auto", "none", "required" or {function: {name}}
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    sampling: Sampling = field(default_factory=Sampling)
    logprobs: bool = False
    top_logprobs: int | None = None
