"""Request bodies of the OpenAI-compatible endpoints, as the official client sends them: what LLMWS reads of any
body (`ChatCompletionFields`, `CompletionFields`: every other field is kept as sent, for an upstream alias to
judge), and the whole body as the local engine takes it (`ChatCompletionRequest`, `CompletionRequest`: strict)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import RequestBody


class ContentPart(RequestBody):
    """A part of a message's content: text, or an image, audio or file part (its fields are the part type's own,
    and the local engine refuses the types it cannot take by name)."""

    model_config = ConfigDict(extra="allow", str_max_length=100_000)
    type: str = Field(max_length=64)
    text: str | None = None


class ChatMessage(RequestBody):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None  # None: an assistant turn that only calls tools
    name: str | None = Field(None, max_length=64)
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = Field(None, max_length=256)

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part.text or "" for part in self.content)


class StreamOptions(RequestBody):
    include_usage: bool = False


class ForwardedFields(BaseModel):
    """What LLMWS reads of an OpenAI body before it knows where the model is served: the model, streaming, and the
    sampling fields limits, usage and the alias's defaults depend on, checked as the local engine checks them.
    Everything else stays as the client sent it."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=200)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(1, ge=1, le=16)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)


class ChatCompletionFields(ForwardedFields):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionFields(ForwardedFields):
    prompt: str | list[Any]


class SamplingFields(RequestBody):
    """What both OpenAI endpoints share."""

    model: str = Field(min_length=1, max_length=200)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**62)
    n: int = Field(1, ge=1, le=16)
    presence_penalty: float = Field(0, ge=-2, le=2)
    frequency_penalty: float = Field(0, ge=-2, le=2)
    user: str | None = Field(None, max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Extensions vLLM and others accept too.
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, ge=0.01, le=10, description="Below 0.01 it overflows the scores.")
    # Output constraints as vLLM takes them (api/openai/structured_outputs.py): one of json, regex, choice,
    # grammar, json_object; and the older top-level names.
    structured_outputs: Any = None
    guided_json: Any = None
    guided_regex: Any = None
    guided_choice: Any = None
    guided_grammar: Any = None

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    metadata: dict[str, str] | None = None
    store: bool | None = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None
    response_format: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    logit_bias: Any = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    web_search_options: Any = None


class CompletionRequest(SamplingFields):
    prompt: str | list[str]
    response_format: Any = None  # vLLM takes it on completions too
    logprobs: Any = None
    echo: Any = None
    suffix: Any = None
    best_of: Any = None
    logit_bias: Any = None
