"""A tiny OTLP/HTTP trace receiver for the tests: `POST /v1/traces` bodies decoded as the protobuf
`ExportTraceServiceRequest` (opentelemetry-proto), the spans kept, and a waiter woken at each arrival."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

SPAN_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root
    name: str
    kind: str
    attributes: dict[str, Any]
    status: str  # "unset", "ok" or "error"
    service: str
    links: tuple[str, ...]  # the linked spans' ids
    start_ns: int
    end_ns: int


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, which) if which else None


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.posts = 0
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the handler's protocol names it)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver._take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _take(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = {item.key: _value(item.value) for item in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(ReceivedSpan(
                        trace_id=span.trace_id.hex(), span_id=span.span_id.hex(), parent_id=span.parent_span_id.hex(),
                        name=span.name, kind=SPAN_KINDS.get(span.kind, "unspecified"),
                        attributes={item.key: _value(item.value) for item in span.attributes},
                        status={0: "unset", 1: "ok", 2: "error"}[span.status.code],
                        service=str(resource.get("service.name")),
                        links=tuple(link.span_id.hex() for link in span.links),
                        start_ns=span.start_time_unix_nano, end_ns=span.end_time_unix_nano))
        with self._arrived:
            self.posts += 1
            self.spans.extend(spans)
            self._arrived.notify_all()

    def wait_for(self, found: Callable[[list[ReceivedSpan]], bool], within_s: float = 30) -> list[ReceivedSpan]:
        """The spans received, once ``found`` says they are complete; fails past ``within_s``."""
        deadline = time.monotonic() + within_s
        with self._arrived:
            if not self._arrived.wait_for(lambda: found(self.spans), timeout=max(0.0, deadline - time.monotonic())):
                raise AssertionError(f"not received within {within_s} s; got {[s.name for s in self.spans]}")
            return list(self.spans)

    def trace_of(self, span: ReceivedSpan) -> list[ReceivedSpan]:
        with self._arrived:
            return [other for other in self.spans if other.trace_id == span.trace_id]


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    thread = threading.Thread(target=receiver._server.serve_forever, name="otlp-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver._server.shutdown()
        receiver._server.server_close()
