"""Tracing through a real `llmws serve`: with `LLMWS_OTEL_ENDPOINT` pointing at an OTLP/HTTP receiver of the test's
own, each request is one trace (the request, its generation, the backend chosen, the engine's admission or the
upstream calls, the first token) with token counts and without prompt text, credentials or query strings; without
the setting nothing is installed and nothing is sent."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from pydantic import ValidationError
from websockets.sync.client import connect

from api.settings import Settings
from api.tracing import traces_url
from bench.fake_openai import WORDS, FakeUpstream
from tests.conftest import ADMIN_PASSWORD, make_settings
from tests.support.access import login
from tests.support.in_process import client_from, running_app
from tests.support.live import LiveApi, serving
from tests.support.net import free_port
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver

SERVICE = "llmws-under-test"
GENERATION = {"llmws.generation", "llmws.route", "llmws.first_token"}
LOCAL = {"llmws.engine.admission"} | GENERATION


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def traced_api(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, chat_model_dir: Path,
               receiver: OtlpReceiver) -> Iterator[LiveApi]:
    """`llmws serve` with the tiny chat model, exporting its traces to ``receiver`` (batches every 50 ms); no
    provider health checks meanwhile, so a dead deployment is found by a request."""
    folder = tmp_path_factory.mktemp("traced")
    shutil.copyfile(sqlite_template, folder / "llmws.db")
    env = {name: value for name, value in os.environ.items() if not name.startswith(("LLMWS_", "OTEL_"))}
    env |= {"LLMWS_DATA_DIR": str(folder / "var"), "LLMWS_DATABASE_URL": f"sqlite:///{folder / 'llmws.db'}",
            "LLMWS_MODEL_DIRS": str(chat_model_dir.parent), "LLMWS_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "LLMWS_USAGE_FLUSH_INTERVAL": "1", "LLMWS_PROVIDER_HEALTH_INTERVAL": "1h",
            "LLMWS_SECRET_KEY": "tracing-tests-secret-key-0123456789abcdef",
            "LLMWS_OTEL_ENDPOINT": receiver.endpoint, "LLMWS_OTEL_SERVICE_NAME": SERVICE,
            "OTEL_BSP_SCHEDULE_DELAY": "50", "PYTHONUNBUFFERED": "1"}
    with serving(folder, env, "traced") as traced:
        yield traced


def one_trace(receiver: OtlpReceiver, root: str, names: set[str], **generation: Any) -> dict[str, list[ReceivedSpan]]:
    """The spans, by name, of the trace under a ``root`` server span whose generation has these attributes, once
    the trace holds every span named."""
    def complete(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]] | None:
        for span in spans:
            if span.name == "llmws.generation" and generation.items() <= span.attributes.items():
                found: dict[str, list[ReceivedSpan]] = {}
                for other in spans:
                    if other.trace_id == span.trace_id:
                        found.setdefault(other.name, []).append(other)
                if names | {root} <= set(found):
                    return found
        return None

    return complete(receiver.wait_for(lambda spans: complete(spans) is not None)) or {}


def assert_parented(spans: dict[str, list[ReceivedSpan]], root: str) -> ReceivedSpan:
    """One root server span, the generation under it, every step of ours under the generation; the generation."""
    [request] = spans[root]
    assert request.kind == "server" and request.parent_id == "" and request.service == SERVICE
    [generation] = spans["llmws.generation"]
    assert generation.parent_id == request.span_id
    for name, group in spans.items():
        if name.startswith("BackgroundTask"):  # the instrumentation's span for a response's after-task
            assert all(span.parent_id == request.span_id for span in group), name
        elif name not in {root, "llmws.generation"}:
            assert all(span.parent_id == generation.span_id for span in group), name
    [first_token] = spans["llmws.first_token"]
    assert first_token.attributes["llmws.received"] is True
    calls = spans.get("llmws.engine.admission", []) + spans.get("llmws.upstream", [])
    assert first_token.start_ns >= max(call.end_ns for call in calls)  # the wait begins once the backend started
    return generation


def assert_nothing_secret(receiver: OtlpReceiver, *secrets: str) -> None:
    with receiver._arrived:
        seen = json.dumps([span.attributes for span in receiver.spans], default=str)
    for secret in secrets:
        assert secret not in seen


def test_a_local_chat_completion_is_one_trace_with_its_token_counts(traced_api: LiveApi,
                                                                     receiver: OtlpReceiver) -> None:
    account = traced_api.new_account("traced")
    marker = f"zebra{uuid.uuid4().hex[:8]}"
    client = openai.OpenAI(base_url=f"{traced_api.base_url}/v1", api_key=account.key, max_retries=0)
    chunks = list(client.chat.completions.create(
        model="tiny-chat", messages=[{"role": "user", "content": f"Say {marker}."}], max_tokens=8, temperature=0,
        stream=True, stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    assert usage is not None

    spans = one_trace(receiver, "POST /v1/chat/completions", LOCAL, **{"llmws.request_id": chunks[0].id})
    # No span per streamed chunk; the response's after-task (closing the generation) is the request's.
    assert set(spans) - {"BackgroundTask close"} == {"POST /v1/chat/completions"} | LOCAL
    generation = assert_parented(spans, "POST /v1/chat/completions")
    assert generation.attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert generation.attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert generation.attributes["llmws.status"] == "ok" and generation.attributes["llmws.backend"] == "local"
    assert generation.status != "error"
    [route] = spans["llmws.route"]
    assert route.attributes == {"gen_ai.request.model": "tiny-chat", "llmws.backend.kind": "local"}
    assert_nothing_secret(receiver, marker, account.key)


def test_a_native_stream_is_traced_to_its_end_in_the_background(traced_api: LiveApi,
                                                                 receiver: OtlpReceiver) -> None:
    account = traced_api.new_account("tracedn")
    body = {"message": "Tell me more.", "max_tokens": 6, "temperature": 0}
    with httpx.stream("POST", f"{traced_api.base_url}/v1/chat/stream", json=body, headers=account.headers,
                      timeout=30) as response:
        frames = [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]
    done = frames[-1]
    spans = one_trace(receiver, "POST /v1/chat/stream", LOCAL,
                      **{"gen_ai.usage.output_tokens": done["usage"]["completion_tokens"], "llmws.status": "ok"})
    assert_parented(spans, "POST /v1/chat/stream")


def test_an_alias_is_one_trace_with_a_span_per_deployment_tried(traced_api: LiveApi, receiver: OtlpReceiver) -> None:
    upstream = FakeUpstream()
    upstream.start()
    try:
        providers = [httpx.post(f"{traced_api.base_url}/admin/providers", headers=traced_api.admin, json={
            "name": f"prov-{uuid.uuid4().hex[:6]}", "base_url": base_url, "timeout_s": 5,
            "api_key": "sk-upstream-secret-4567"}).json() for base_url in (f"http://127.0.0.1:{free_port()}/v1",
                                                                           upstream.base_url)]
        dead, alive = (provider["name"] for provider in providers)
        alias = f"alias-{uuid.uuid4().hex[:6]}"
        created = httpx.post(f"{traced_api.base_url}/admin/models", headers=traced_api.admin, json={
            "name": alias, "deployments": [{"provider_id": provider["id"], "upstream_model": "fake-fast",
                                            "priority": priority} for priority, provider in enumerate(providers)]})
        assert created.status_code == 201, created.text
        account = traced_api.new_account("tracedg")
        client = openai.OpenAI(base_url=f"{traced_api.base_url}/v1", api_key=account.key, max_retries=0)
        chunks = list(client.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}],
                                                     stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(WORDS)
    finally:
        upstream.stop()

    spans = one_trace(receiver, "POST /v1/chat/completions", GENERATION | {"llmws.upstream"},
                      **{"gen_ai.request.model": alias})
    generation = assert_parented(spans, "POST /v1/chat/completions")
    assert generation.attributes["llmws.backend"] == alive
    assert generation.attributes["llmws.count_source"] == "upstream"  # the fake reports usage when asked
    assert generation.attributes["gen_ai.usage.output_tokens"] == len(WORDS)
    [route] = spans["llmws.route"]
    assert route.attributes["llmws.deployments"] == [dead, alive]
    tried = sorted(spans["llmws.upstream"], key=lambda span: span.start_ns)
    assert [(span.attributes["llmws.backend"], span.status) for span in tried] == [(dead, "error"), (alive, "unset")]
    assert "llmws.engine.admission" not in spans
    assert_nothing_secret(receiver, account.key, "sk-upstream-secret-4567")


def test_a_websocket_inference_is_a_trace_of_its_own_linked_to_its_connection(traced_api: LiveApi,
                                                                             receiver: OtlpReceiver) -> None:
    account = traced_api.new_account("tracedw")
    url = traced_api.base_url.replace("http://", "ws://") + "/v1/ws"
    with connect(url) as ws:
        ws.send(json.dumps({"type": "hello", "token": account.key}))
        assert json.loads(ws.recv(timeout=30))["type"] == "welcome"
        ws.send(json.dumps({"type": "inference", "prompt": {"user": "Hello there."},
                            "config": {"temperature": 0, "max_tokens": 5}}))
        while (event := json.loads(ws.recv(timeout=30)))["type"] not in {"done", "error"}:
            pass
    assert event["type"] == "done"
    spans = one_trace(receiver, "llmws.ws.inference", LOCAL,
                      **{"gen_ai.usage.output_tokens": event["usage"]["completion_tokens"]})
    assert_parented(spans, "llmws.ws.inference")
    [inference] = spans["llmws.ws.inference"]
    [connection] = inference.links
    # The connection's span comes when the connection is over; it is the request's server span, in another trace.
    received = receiver.wait_for(lambda seen: any(span.span_id == connection for span in seen))
    [linked] = [span for span in received if span.span_id == connection]
    assert linked.kind == "server" and linked.trace_id != inference.trace_id


def test_a_query_string_stays_out_of_the_request_span(traced_api: LiveApi, receiver: OtlpReceiver) -> None:
    account = traced_api.new_account("tracedq")
    secret = f"query-secret-{uuid.uuid4().hex[:8]}"
    assert httpx.get(f"{traced_api.base_url}/v1/models", params={"token": secret},
                     headers=account.headers).status_code == 200
    spans = receiver.wait_for(lambda seen: any(span.name == "GET /v1/models" for span in seen))
    [request] = [span for span in spans if span.name == "GET /v1/models"]
    assert request.attributes["http.url"] == f"{traced_api.base_url}/v1/models"
    assert_nothing_secret(receiver, secret)


async def test_without_the_setting_nothing_is_installed_and_nothing_is_sent(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with otlp_receiver() as receiver:
        # The SDK's own variable points at the receiver too: it must not turn anything on by itself.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        async with running_app(make_settings(tmp_path / "var", database_url)) as app:
            async with client_from(app) as client:
                token = await login(client, "admin", ADMIN_PASSWORD)
                answer = await client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                                           json={"model": "none", "messages": [{"role": "user", "content": "hi"}]})
                assert answer.status_code in {404, 503}  # no model here: the generation's set-up ran and refused
            assert app.state.tracing is None
            layer: Any = app.middleware_stack
            while layer is not None:
                assert not isinstance(layer, OpenTelemetryMiddleware)
                layer = getattr(layer, "app", None)
        # The lifespan's end would have flushed an exporter's queue: nothing arrived, nothing was set up.
        assert receiver.posts == 0
        assert not isinstance(trace.get_tracer_provider(), TracerProvider)


def test_the_collector_setting_is_checked_and_names_the_base_url() -> None:
    assert Settings(_env_file=None, otel_endpoint=" ").otel_endpoint is None  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="collector URL"):
        Settings(_env_file=None, otel_endpoint="collector:4318")  # type: ignore[call-arg]
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("https://otel.example/v1/traces") == "https://otel.example/v1/traces"
