"""The engine's own errors. The API maps them to HTTP statuses; nothing here knows about HTTP."""

from __future__ import annotations


class EngineError(Exception):
    code = "engine_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidParameters(EngineError):
    """A sampling parameter or prompt that cannot be served as given."""

    code = "invalid_parameter"


class ContextTooLong(EngineError):
    code = "context_length_exceeded"

    def __init__(self, input_tokens: int, max_context: int) -> None:
        super().__init__(f"the prompt has {input_tokens} tokens; this model can take at most {max_context}",
                         param="messages")
        self.input_tokens = input_tokens
        self.max_context = max_context


class Overloaded(EngineError):
    """The admission queue is full; the caller should retry later."""

    code = "engine_overloaded"

    def __init__(self, queue_length: int, retry_after_s: int = 1) -> None:
        super().__init__(f"the engine's queue is full ({queue_length} requests waiting); retry shortly")
        self.retry_after_s = retry_after_s


class NoModelLoaded(EngineError):
    code = "no_model_loaded"


class UnsupportedModel(EngineError):
    """A model the engine cannot serve: its cache cannot be batched (recurrent or linear-attention state)."""

    code = "unsupported_model"


class RequestTooLarge(InvalidParameters):
    """A request that could not run even alone: its choices' KV cache would exceed the engine's memory budget."""

    code = "request_too_large"
