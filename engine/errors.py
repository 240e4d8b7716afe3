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


class GenerationFailed(EngineError):
    """The backend ended a generation with an error instead of an answer (the API raises it from the error event)."""

    code = "generation_failed"


class EngineStopped(EngineError):
    """The scheduler is shutting down and takes no new requests."""

    code = "engine_stopped"


# Switching the local model (engine/host.py).


class EngineBusy(EngineError):
    code = "engine_busy"


class ModelLoadFailed(EngineError):
    code = "model_load_failed"


class ModelInUse(EngineError):
    code = "model_in_use"


# Fetching a model into the managed model folder (engine/downloads.py).


class DownloadRefused(EngineError):
    code = "invalid_download"


class NameTaken(DownloadRefused):
    code = "model_exists"


class DownloadFailed(EngineError):
    code = "download_failed"


class DownloadCancelled(EngineError):
    code = "download_cancelled"


class DownloadTooLarge(DownloadFailed):
    code = "download_too_large"


class InsufficientStorage(DownloadRefused):
    code = "insufficient_storage"


# OpenAI-compatible upstream servers (engine/upstream.py).


class UpstreamError(EngineError):
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    """The upstream did not answer (or answered 5xx): nothing was sent, another deployment may serve it."""

    code = "upstream_unavailable"


class UpstreamRefused(UpstreamError):
    """The upstream answered 4xx: the request itself is the problem; its message is passed on."""

    code = "upstream_refused"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
