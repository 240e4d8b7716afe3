"""OpenTelemetry traces of requests through LLMWS, exported over OTLP/HTTP when ``LLMWS_OTEL_ENDPOINT`` is set.

One request is one trace::

    POST /v1/chat/completions        the request (FastAPI's instrumentation)
    └── llmws.generation             one generation, ended when its usage is recorded: token counts, status
        ├── llmws.route              the backend chosen: the local engine, or an alias's deployments
        ├── llmws.engine.admission   the engine took the request (its start event); for an upstream instead
        │   llmws.upstream           the call, up to its first chunk (one per deployment tried)
        └── llmws.first_token        from the backend's start to the first token

A WebSocket inference is a trace of its own under ``llmws.ws.inference``, linked to the connection's span (a
connection may live for days). Attributes carry names, counts and statuses: never prompt or answer text,
credentials, error messages, or query strings (a link may carry a token there).

Without the setting ``install`` installs nothing (no provider, exporter or middleware) and every hook here is a
context-variable read. The spans are the app's own (a provider per app, not the process-wide one), so apps in one
process do not share a tracer.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

TRACES_PATH = "/v1/traces"
# Probes every few seconds would bury the requests.
UNTRACED_URLS = r"/(healthz|readyz|metrics)(\?|$)"

P = ParamSpec("P")
R = TypeVar("R")
Attributes = Mapping[str, AttributeValue]


@dataclass(frozen=True)
class Tracing:
    """The app's tracer and the provider that exports what it records."""

    tracer: Tracer
    provider: TracerProvider

    async def close(self) -> None:
        """Export what is still queued, then stop (the export blocks: off the event loop)."""
        await asyncio.to_thread(self.provider.shutdown)


def install(app: FastAPI, endpoint: str | None, service_name: str) -> Tracing | None:
    """Tracing for ``app``, exporting to the OTLP/HTTP collector at ``endpoint``; None, and nothing installed,
    without one. The SDK's own ``OTEL_BSP_*`` and ``OTEL_EXPORTER_OTLP_HEADERS`` variables still apply."""
    if not endpoint:
        return None
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint))))
    # No span per ASGI message: a streamed answer would make one per chunk.
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls=UNTRACED_URLS,
                                       exclude_spans=["receive", "send"], server_request_hook=_without_query)
    return Tracing(provider.get_tracer("llmws"), provider)


def traces_url(endpoint: str) -> str:
    """The collector's traces URL: ``endpoint`` is its base (as ``OTEL_EXPORTER_OTLP_ENDPOINT`` is), unless it
    names the path already."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def _without_query(span: Span, scope: dict[str, Any]) -> None:
    """The request's span keeps the URL without its query string, which may carry a credential."""
    if not scope.get("query_string") or not span.is_recording():
        return
    attributes = getattr(span, "attributes", None) or {}
    url = attributes.get("http.url")
    if isinstance(url, str):
        span.set_attribute("http.url", urlunsplit(urlsplit(url)._replace(query="")))
    if "url.query" in attributes:
        span.set_attribute("url.query", "")


class NoTrace:
    """A generation that is not traced: every hook does nothing."""

    def step(self, name: str, attributes: Attributes | None = None) -> AbstractContextManager[Span]:
        return _UNTRACED_STEP

    def backend_call(self, kind: str, attributes: Attributes | None = None) -> AbstractContextManager[Span]:
        return _UNTRACED_STEP

    def first_token(self) -> None:
        pass

    def end(self, status: str, attributes: Attributes) -> None:
        pass

    def fail(self, error: BaseException) -> None:
        pass


_UNTRACED_STEP = nullcontext(INVALID_SPAN)  # reusable: nothing to enter or leave
NO_TRACE = NoTrace()
_current: ContextVar[GenerationTrace | None] = ContextVar("llmws_generation_trace", default=None)


def current() -> NoTrace:
    """The generation being set up in this context (its meters take it), or `NO_TRACE`."""
    return _current.get() or NO_TRACE


def step(name: str, attributes: Attributes | None = None) -> AbstractContextManager[Span]:
    """A span for a step of the generation being set up here (choosing the backend)."""
    return current().step(name, attributes)


def backend_call(kind: str, attributes: Attributes | None = None) -> AbstractContextManager[Span]:
    """A span for the call that starts the backend of the generation being set up here."""
    return current().backend_call(kind, attributes)


class GenerationTrace(NoTrace):
    """One generation's span, ended once: by its usage record, or by a failure before there is one to record."""

    def __init__(self, tracer: Tracer, span: Span) -> None:
        self.tracer = tracer
        self.span = span
        self.context = trace.set_span_in_context(span)
        self.waiting: Span | None = None  # llmws.first_token, open from the backend's start to the first token
        self.ended = False

    @contextmanager
    def step(self, name: str, attributes: Attributes | None = None) -> Iterator[Span]:
        """A child span around a step of the generation; a step that raises is marked failed with its type."""
        span = self.tracer.start_span(name, context=self.context, attributes=attributes)
        try:
            yield span
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            span.end()

    @contextmanager
    def backend_call(self, kind: str, attributes: Attributes | None = None) -> Iterator[Span]:
        """The call that starts the backend (the engine's admission, an upstream call; an alias behind the engine
        interface is an upstream); once it returns, the wait for the first token begins."""
        name = "llmws.engine.admission" if kind not in ("gateway", "upstream") else "llmws.upstream"
        with self.step(name, attributes) as span:
            yield span
        if self.waiting is None and not self.ended:
            self.waiting = self.tracer.start_span("llmws.first_token", context=self.context)

    def first_token(self) -> None:
        if self.waiting is not None and self.waiting.is_recording():
            self.waiting.set_attribute("llmws.received", True)
            self.waiting.end()

    def end(self, status: str, attributes: Attributes) -> None:
        if self.ended:
            return
        self.ended = True
        if self.waiting is not None and self.waiting.is_recording():
            self.waiting.set_attribute("llmws.received", False)  # ended before any token
            self.waiting.end()
        self.span.set_attributes({"llmws.status": status, **attributes})
        if status == "error":
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()

    def fail(self, error: BaseException) -> None:
        """Setting up failed before a usage record (a refusal for what was asked, a cancel)."""
        if not self.ended:
            self.ended = True
            _failed(self.span, error)
            self.span.end()


def _failed(span: Span, error: BaseException) -> None:
    # The type only: messages may quote what the upstream or the client sent.
    span.set_attribute("error.type", getattr(error, "code", None) or type(error).__name__)
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))


def _tracing_of(holder: object) -> Tracing | None:
    """The app's tracing from the app's services (``api.lifespan.AppServices``), or from a request of the app."""
    app = getattr(holder, "app", None)
    owner = app.state if app is not None else holder
    return getattr(owner, "tracing", None)


def traced_generation(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """``func`` sets up a generation (its first argument: the app's services, or a request of the app) inside an
    ``llmws.generation`` span, the child of the current one: spans and meters made inside belong to it. An
    exception out of ``func`` ends the span; otherwise the usage record does, when the answer is over. Inside a
    generation already being set up (an alias failing over to the local engine) it is that one."""
    @functools.wraps(func)
    async def traced(*args: P.args, **kwargs: P.kwargs) -> R:
        tracing = _tracing_of(args[0]) if args else None
        if tracing is None or _current.get() is not None:
            return await func(*args, **kwargs)
        generation = GenerationTrace(tracing.tracer, tracing.tracer.start_span("llmws.generation"))
        token = _current.set(generation)
        try:
            return await func(*args, **kwargs)
        except BaseException as exc:
            generation.fail(exc)
            raise
        finally:
            _current.reset(token)
    return traced


def traced_ws_inference(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """``func`` runs a WebSocket inference (its first argument: the app's services) as a trace of its own, rooted in
    an ``llmws.ws.inference`` span linked to the connection's."""
    @functools.wraps(func)
    async def traced(*args: P.args, **kwargs: P.kwargs) -> R:
        tracing = _tracing_of(args[0]) if args else None
        if tracing is None:
            return await func(*args, **kwargs)
        connection = trace.get_current_span().get_span_context()
        links = [Link(connection)] if connection.is_valid else []
        with tracing.tracer.start_as_current_span("llmws.ws.inference", context=Context(), kind=SpanKind.SERVER,
                                                  links=links, record_exception=False,
                                                  set_status_on_exception=False) as span:
            try:
                return await func(*args, **kwargs)
            except BaseException as exc:
                _failed(span, exc)
                raise
    return traced
