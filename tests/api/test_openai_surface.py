"""The whole OpenAI chat surface through a gateway alias, with the official `openai` client against `llmws serve`:
what the client sends reaches the upstream as it was sent (only `model` rewritten; a stream also asks for the
usage report), unknown and vendor fields included, and what the upstream answers (tool calls, streamed argument
deltas, logprobs) reaches the client intact. The local engine refuses what it cannot do with a 400 naming the
field. The upstream is a recording fake of these tests' own (tests/support/recording_upstream.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any, get_args

import httpx
import openai
import pytest

from api.schemas.gateway import ProviderKind
from api.services.gateway.upstream_adapters import ADAPTERS
from bench.fake_openai import serve_in_thread
from tests.support.live import Account, LiveApi
from tests.support.recording_upstream import ANSWER, ARGUMENT_PIECES, CALL_ID, MODEL, RecordingUpstream

TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "The weather in a city.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city"]}, "strict": True}}]
QUESTION = {"role": "user", "content": "How warm is it in Paris?"}
IMAGE = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJ"
         "RU5ErkJggg==")


class SentBodies:
    """The bodies the client sent, byte for byte (an httpx request hook on the client's own transport)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx.Request) -> None:
        if request.method == "POST":
            self.bodies.append(request.content)

    def last(self) -> dict[str, Any]:
        return json.loads(self.bodies[-1])


@pytest.fixture(scope="module")
def recording() -> Iterator[RecordingUpstream]:
    upstream = RecordingUpstream()
    server, root = serve_in_thread(upstream.app)
    upstream.base_url = f"{root}/v1"
    yield upstream
    server.should_exit = True


def make_alias(live_api: LiveApi, base_url: str | None) -> str:
    deployment: dict[str, Any] = {"provider_id": None}
    if base_url is not None:
        provider = httpx.post(f"{live_api.base_url}/admin/providers", headers=live_api.admin, json={
            "name": f"rec-{uuid.uuid4().hex[:6]}", "base_url": base_url, "kind": "vllm"})
        assert provider.status_code == 201, provider.text
        deployment = {"provider_id": provider.json()["id"], "upstream_model": MODEL}
    name = f"surface-{uuid.uuid4().hex[:6]}"
    created = httpx.post(f"{live_api.base_url}/admin/models", headers=live_api.admin,
                         json={"name": name, "deployments": [deployment]})
    assert created.status_code == 201, created.text
    return name


@pytest.fixture
def sent() -> SentBodies:
    return SentBodies()


@pytest.fixture
def client(live_api: LiveApi, sent: SentBodies) -> Iterator[openai.OpenAI]:
    account: Account = live_api.new_account("surface")
    with httpx.Client(event_hooks={"request": [sent]}, timeout=30) as http:
        yield openai.OpenAI(base_url=f"{live_api.base_url}/v1", api_key=account.key, max_retries=0, http_client=http)


@pytest.fixture
def alias(live_api: LiveApi, recording: RecordingUpstream) -> str:
    return make_alias(live_api, recording.base_url)


def assert_forwarded_as_sent(sent: SentBodies, recording: RecordingUpstream, alias: str) -> None:
    """The upstream got the client's body with only `model` changed: the same JSON, the same bytes."""
    client_body, upstream_body = sent.last(), recording.last()
    assert client_body["model"] == alias and upstream_body["model"] == MODEL
    assert upstream_body == {**client_body, "model": MODEL}
    assert list(upstream_body) == list(client_body)  # the client's field order too
    quoted = json.dumps(alias).encode()
    assert recording.bodies[-1] == sent.bodies[-1].replace(b'"model":' + quoted, b'"model":"' + MODEL.encode() + b'"')


def test_a_tool_loop_reaches_the_upstream_as_the_client_sent_it(
    client: openai.OpenAI, sent: SentBodies, recording: RecordingUpstream, alias: str
) -> None:
    called = client.chat.completions.create(model=alias, messages=[QUESTION], tools=TOOLS,  # type: ignore[arg-type]
                                            tool_choice="auto", parallel_tool_calls=False)
    assert_forwarded_as_sent(sent, recording, alias)
    choice = called.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None and called.model == alias
    [call] = choice.message.tool_calls or []
    assert (call.id, call.function.name, call.function.arguments) == (CALL_ID, "lookup", "".join(ARGUMENT_PIECES))

    assistant = {"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": "lookup", "arguments": call.function.arguments}}]}
    result = {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"celsius": 21})}
    answer = client.chat.completions.create(model=alias, messages=[QUESTION, assistant, result],  # type: ignore[list-item]
                                            tools=TOOLS, parallel_tool_calls=False)  # type: ignore[arg-type]
    assert_forwarded_as_sent(sent, recording, alias)
    assert recording.last()["messages"][1:] == [assistant, result]
    assert answer.choices[0].message.content == ANSWER and answer.choices[0].finish_reason == "stop"


def test_a_streamed_tool_loop_gets_every_argument_delta_intact(
    client: openai.OpenAI, sent: SentBodies, recording: RecordingUpstream, alias: str
) -> None:
    chunks = list(client.chat.completions.create(model=alias, messages=[QUESTION], tools=TOOLS,  # type: ignore[arg-type]
                                                 stream=True, parallel_tool_calls=True))
    upstream_body = recording.last()
    # A stream also asks the upstream for its usage report (the client did not ask for it, and gets none).
    assert upstream_body.pop("stream_options") == {"include_usage": True}
    assert upstream_body == {**sent.last(), "model": MODEL}
    deltas = [call for chunk in chunks if chunk.choices for call in chunk.choices[0].delta.tool_calls or []]
    assert [d.function.arguments for d in deltas if d.function] == ["", *ARGUMENT_PIECES]
    assert deltas[0].id == CALL_ID and deltas[0].function and deltas[0].function.name == "lookup"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert all(chunk.model == alias and chunk.usage is None for chunk in chunks)

    assistant = {"role": "assistant", "content": None, "tool_calls": [{"id": CALL_ID, "type": "function", "function": {
        "name": "lookup", "arguments": "".join(d.function.arguments or "" for d in deltas if d.function)}}]}
    result = {"role": "tool", "tool_call_id": CALL_ID, "content": "21"}
    answer = list(client.chat.completions.create(
        model=alias, messages=[QUESTION, assistant, result], tools=TOOLS, stream=True,  # type: ignore[list-item,arg-type]
        stream_options={"include_usage": True}))
    assert recording.last()["messages"][1:] == [assistant, result]
    assert recording.last()["stream_options"] == sent.last()["stream_options"] == {"include_usage": True}
    assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices).strip() == ANSWER
    assert answer[-1].usage is not None and answer[-1].usage.completion_tokens == 5


def test_images_formats_logprobs_and_extra_body_fields_reach_the_upstream_as_sent(
    client: openai.OpenAI, sent: SentBodies, recording: RecordingUpstream, alias: str
) -> None:
    schema = {"name": "weather", "strict": True, "schema": {"type": "object", "properties": {
        "celsius": {"type": "number"}}, "required": ["celsius"], "additionalProperties": False}}
    answer = client.chat.completions.create(
        model=alias, messages=[{"role": "user", "content": [  # type: ignore[list-item]
            {"type": "text", "text": "What is in this picture? Ünïcödé ✓"},
            {"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}}]}],
        response_format={"type": "json_schema", "json_schema": schema},  # type: ignore[typeddict-item]
        logprobs=True, top_logprobs=2, parallel_tool_calls=True, tools=TOOLS, seed=7,  # type: ignore[arg-type]
        temperature=0.3, max_completion_tokens=64, metadata={"run": "surface"},
        extra_body={"structured_outputs": {"json": schema["schema"]}, "chat_template_kwargs": {
            "enable_thinking": False}, "top_k": 20, "min_p": 0.05, "vendor_field": [1, {"nested": None}]})
    assert_forwarded_as_sent(sent, recording, alias)
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert [top.token for top in logprobs.content[0].top_logprobs] == ["It", "The"]


def test_completions_forward_fields_the_local_engine_does_not_know(
    client: openai.OpenAI, sent: SentBodies, recording: RecordingUpstream, alias: str
) -> None:
    answer = client.completions.create(model=alias, prompt=[[1, 2, 3]], echo=True, logprobs=2, suffix="!",
                                       best_of=2, extra_body={"top_k": 5, "prompt_logprobs": 1})
    assert_forwarded_as_sent(sent, recording, alias)
    assert answer.choices[0].text == "[[1, 2, 3]]" and answer.model == alias


@pytest.mark.parametrize(("fields", "param"), [
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "see"},
                                                {"type": "image_url", "image_url": {"url": IMAGE}}]}]},
     "messages[0].content[1]"),
    ({"structured_outputs": {"structural_tag": {}}}, "structured_outputs.structural_tag"),
    ({"chat_template_kwargs": {"enable_thinking": False}}, "chat_template_kwargs"),
])
@pytest.mark.parametrize("through_alias", [False, True])
def test_the_local_engine_refuses_what_it_cannot_do_naming_the_field(
    live_api: LiveApi, client: openai.OpenAI, fields: dict[str, Any], param: str, through_alias: bool
) -> None:
    model = make_alias(live_api, None) if through_alias else "tiny-chat"
    with pytest.raises(openai.BadRequestError) as refused:  # extra_body: the fields as sent, known to the client or not
        client.chat.completions.create(model=model, messages=[QUESTION], extra_body=fields)
    assert refused.value.status_code == 400 and refused.value.param == param, refused.value.body


def test_every_provider_kind_an_admin_may_store_has_an_adapter() -> None:
    assert set(get_args(ProviderKind)) == set(ADAPTERS)
