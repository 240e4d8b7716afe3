"""The OpenAI endpoints beyond chat through a gateway alias, on a real `llmws serve` with the official `openai`
client (httpx where it has no call): embeddings, responses (JSON, streamed, and follow-ups that reach the
deployment holding the response), audio transcription, translation and speech, images, moderations, and vLLM's
rerank and score. The upstream is a fake of the tests' own that records each request as it arrived: it must get
the client's body unchanged but for `model`, and each request must leave one usage row with the right tokens."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from bench.fake_openai_endpoints import ANSWER, EMBEDDING, TRANSCRIPT, FakeEndpointsUpstream, speech_bytes
from tests.support.gateway import client_for, usage_rows
from tests.support.live import LiveApi

UPSTREAM_MODEL = "fake-any"


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeEndpointsUpstream, FakeEndpointsUpstream]]:
    first, second = FakeEndpointsUpstream("first"), FakeEndpointsUpstream("second")
    first.start()
    second.start()
    yield first, second
    first.stop()
    second.stop()


def add_provider(live_api: LiveApi, base_url: str) -> dict[str, Any]:
    created = httpx.post(f"{live_api.base_url}/admin/providers", headers=live_api.admin,
                         json={"name": f"prov-{uuid.uuid4().hex[:6]}", "base_url": base_url, "timeout_s": 5})
    assert created.status_code == 201, created.text
    return created.json()


def add_alias(live_api: LiveApi, *deployments: dict[str, Any]) -> str:
    name = f"alias-{uuid.uuid4().hex[:6]}"
    created = httpx.post(f"{live_api.base_url}/admin/models", headers=live_api.admin,
                         json={"name": name, "deployments": list(deployments)})
    assert created.status_code == 201, created.text
    return name


def alias_on(live_api: LiveApi, fake: FakeEndpointsUpstream, model: str = UPSTREAM_MODEL) -> tuple[str, str]:
    """A new alias with one deployment on ``fake``; its name and its provider's."""
    provider = add_provider(live_api, fake.base_url)
    return add_alias(live_api, {"provider_id": provider["id"], "upstream_model": model}), provider["name"]


def as_sent(seen: dict[str, Any], sent: dict[str, Any]) -> None:
    """The upstream got the client's body with only `model` changed, to the deployment's model."""
    assert seen["model"] == UPSTREAM_MODEL
    assert {**seen, "model": sent["model"]} == sent


def test_embeddings_reach_the_upstream_as_sent_and_count_its_usage(live_api: LiveApi, fakes: Any) -> None:
    fake = fakes[0]
    alias, provider = alias_on(live_api, fake)
    account = live_api.new_account("emb")
    client = client_for(live_api, account)

    answer = client.embeddings.create(model=alias, input=["one", "two"], dimensions=3,
                                      extra_body={"truncate_prompt_tokens": 8, "user": "u-1"})
    assert [item.embedding for item in answer.data] == [EMBEDDING] * 2 and answer.model == alias
    as_sent(fake.last("/v1/embeddings").json(), {"model": alias, "input": ["one", "two"], "dimensions": 3,
                                                 "encoding_format": "base64", "truncate_prompt_tokens": 8,
                                                 "user": "u-1"})
    floats = client.embeddings.create(model=alias, input="three", encoding_format="float")
    assert floats.data[0].embedding == EMBEDDING
    assert [(r["model"], r["backend"], r["status"], r["count_source"], r["prompt_tokens"], r["completion_tokens"])
            for r in usage_rows(live_api, account, 2)] == [(alias, provider, "ok", "upstream", 6, 0),
                                                           (alias, provider, "ok", "upstream", 3, 0)]


def test_responses_answer_and_stream_with_the_upstreams_usage(live_api: LiveApi, fakes: Any) -> None:
    fake = fakes[0]
    alias, _ = alias_on(live_api, fake)
    account = live_api.new_account("resp")
    client = client_for(live_api, account)

    answer = client.responses.create(model=alias, input="Say hello", instructions="Be brief", temperature=0.3,
                                     extra_body={"top_k": 5})
    assert answer.output_text == "".join(ANSWER) and answer.model == alias
    as_sent(fake.last("/v1/responses").json(), {"model": alias, "input": "Say hello", "instructions": "Be brief",
                                                "temperature": 0.3, "top_k": 5})
    events = list(client.responses.create(model=alias, input=[{"role": "user", "content": "Hi"}], stream=True))
    assert [e.type for e in events] == ["response.created", *["response.output_text.delta"] * len(ANSWER),
                                        "response.completed"]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "".join(ANSWER)
    assert events[0].response.model == alias and events[-1].response.model == alias
    as_sent(fake.last("/v1/responses").json(), {"model": alias, "input": [{"role": "user", "content": "Hi"}],
                                                "stream": True})
    assert [(r["status"], r["count_source"], r["prompt_tokens"], r["completion_tokens"])
            for r in usage_rows(live_api, account, 2)] == [("ok", "upstream", 11, len(ANSWER))] * 2


def wait_healthy(live_api: LiveApi, provider: dict[str, Any], within_s: float = 15) -> None:
    """Until the health check (every second here) has found the provider up again."""
    deadline = time.monotonic() + within_s
    while httpx.get(f"{live_api.base_url}/admin/providers/{provider['id']}",
                    headers=live_api.admin).json()["health"]["status"] != "healthy":
        assert time.monotonic() < deadline, "the provider never became healthy"
        time.sleep(0.1)


def test_a_follow_up_reaches_the_deployment_that_holds_the_response(live_api: LiveApi, fakes: Any) -> None:
    first, second = fakes
    one, two = add_provider(live_api, first.base_url), add_provider(live_api, second.base_url)
    alias = add_alias(live_api, {"provider_id": one["id"], "upstream_model": UPSTREAM_MODEL, "priority": 0},
                      {"provider_id": two["id"], "upstream_model": UPSTREAM_MODEL, "priority": 1})
    account = live_api.new_account("follow")
    client = client_for(live_api, account)

    first.fail_next.add("/v1/responses")  # the first deployment fails once: the second makes this response
    held = client.responses.create(model=alias, input="first turn")
    assert held.id in second.stored
    wait_healthy(live_api, one)
    assert client.responses.create(model=alias, input="new").id in first.stored  # where new ones go
    followed = client.responses.create(model=alias, input="second turn", previous_response_id=held.id)
    assert followed.id in second.stored and followed.previous_response_id == held.id  # not a 404 from the first
    streamed = list(client.responses.create(model=alias, input="third turn", previous_response_id=followed.id,
                                            stream=True))
    assert streamed[-1].response.id in second.stored
    assert client.responses.retrieve(held.id).id == held.id
    items = client.responses.input_items.list(held.id)
    assert items.data[0].content[0].text == "first turn"  # type: ignore[union-attr]
    with pytest.raises(openai.NotFoundError):  # another user's response does not exist for them
        client_for(live_api, live_api.new_account("stranger")).responses.retrieve(held.id)
    client.responses.delete(held.id)
    assert held.id not in second.stored
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(held.id)
    assert [r["status"] for r in usage_rows(live_api, account, 4)] == ["ok"] * 4  # reads and deletes: no rows


def test_a_transcription_upload_goes_upstream_as_multipart_with_only_the_model_changed(
    live_api: LiveApi, fakes: Any
) -> None:
    fake = fakes[0]
    alias, _ = alias_on(live_api, fake)
    account = live_api.new_account("audio")
    audio = bytes(range(256)) * 64  # not text: must arrive as it was sent
    answer = client_for(live_api, account).audio.transcriptions.create(
        model=alias, file=("clip.wav", io.BytesIO(audio), "audio/wav"), prompt="a greeting", language="en")
    assert answer.text == TRANSCRIPT
    seen = fake.last("/v1/audio/transcriptions")
    assert seen.content_type.startswith("multipart/form-data; boundary=") and audio in seen.body
    assert f'name="model"\r\n\r\n{UPSTREAM_MODEL}\r\n'.encode() in seen.body

    # Byte for byte: the same upload sent by hand arrives as it was, the model's value aside.
    boundary = "b0undary-of-the-test"
    parts = [("model", None, alias.encode()), ("response_format", None, b"text"),
             ("file", "clip.wav", audio)]
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'.encode()
                    + (f'; filename="{filename}"\r\nContent-Type: audio/wav'.encode() if filename else b"")
                    + b"\r\n\r\n" + value + b"\r\n" for name, filename, value in parts) + f"--{boundary}--\r\n".encode()
    translated = httpx.post(f"{live_api.base_url}/v1/audio/translations", content=body, headers={
        **account.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert translated.status_code == 200 and translated.text == TRANSCRIPT  # a plain-text answer, as asked
    assert fake.last("/v1/audio/translations").body == body.replace(alias.encode(), UPSTREAM_MODEL.encode(), 1)
    transcribed, plain = usage_rows(live_api, account, 2)
    assert (transcribed["count_source"], transcribed["prompt_tokens"], transcribed["completion_tokens"]) == (
        "upstream", 40, 6)
    assert plain["count_source"] == "estimated" and plain["status"] == "ok" and plain["completion_tokens"] > 0


def test_speech_streams_the_upstreams_audio_bytes_intact(live_api: LiveApi, fakes: Any) -> None:
    fake = fakes[0]
    alias, _ = alias_on(live_api, fake)
    account = live_api.new_account("speech")
    client = client_for(live_api, account)
    spoken = client.audio.speech.create(model=alias, voice="alloy", input="Hello there, listener.",
                                        response_format="mp3", speed=1.25)
    assert spoken.content == speech_bytes("Hello there, listener.")
    assert spoken.response.headers["content-type"] == "audio/mpeg"
    as_sent(fake.last("/v1/audio/speech").json(), {"model": alias, "voice": "alloy", "response_format": "mp3",
                                                   "input": "Hello there, listener.", "speed": 1.25})
    with client.audio.speech.with_streaming_response.create(model=alias, voice="alloy", input="again") as stream:
        assert b"".join(stream.iter_bytes()) == speech_bytes("again")
    rows = usage_rows(live_api, account, 2)
    assert [(r["status"], r["count_source"], r["completion_tokens"]) for r in rows] == [("ok", "estimated", 0)] * 2
    assert all(r["prompt_tokens"] > 0 for r in rows)  # the text spoken, counted


def test_images_and_moderations_through_an_alias(live_api: LiveApi, fakes: Any) -> None:
    fake = fakes[0]
    alias, _ = alias_on(live_api, fake)
    account = live_api.new_account("img")
    client = client_for(live_api, account)
    images = client.images.generate(model=alias, prompt="a red fox", n=2, size="256x256",
                                    extra_body={"background": "transparent"})
    assert len(images.data) == 2 and images.data[0].b64_json
    as_sent(fake.last("/v1/images/generations").json(), {"model": alias, "prompt": "a red fox", "n": 2,
                                                         "size": "256x256", "background": "transparent"})
    moderated = client.moderations.create(model=alias, input=["fine text", "more text"])
    assert [result.flagged for result in moderated.results] == [False, False] and moderated.model == alias
    as_sent(fake.last("/v1/moderations").json(), {"model": alias, "input": ["fine text", "more text"]})
    image_row, moderation_row = usage_rows(live_api, account, 2)
    assert (image_row["count_source"], image_row["prompt_tokens"], image_row["completion_tokens"]) == (
        "upstream", 9, 4160)
    assert moderation_row["count_source"] == "estimated" and moderation_row["prompt_tokens"] > 0


def test_rerank_and_score_through_an_alias(live_api: LiveApi, fakes: Any) -> None:
    fake = fakes[0]
    alias, _ = alias_on(live_api, fake)
    account = live_api.new_account("rank")
    sent = {"model": alias, "query": "fox", "documents": ["a fox", "a dog", "a cat"], "top_n": 2}
    ranked = httpx.post(f"{live_api.base_url}/v1/rerank", json=sent, headers=account.headers)
    assert ranked.status_code == 200 and ranked.json()["model"] == alias
    assert [r["index"] for r in ranked.json()["results"]] == [0, 1, 2]
    as_sent(fake.last("/v1/rerank").json(), sent)
    scored = httpx.post(f"{live_api.base_url}/v1/score", json={"model": alias, "text_1": "fox",
                                                                "text_2": ["a fox", "a dog"]}, headers=account.headers)
    assert scored.status_code == 200 and len(scored.json()["data"]) == 2
    assert [(r["count_source"], r["prompt_tokens"], r["completion_tokens"])
            for r in usage_rows(live_api, account, 2)] == [("upstream", 15, 0), ("upstream", 8, 0)]


def test_a_failing_deployment_hands_over_before_the_first_byte(live_api: LiveApi, fakes: Any) -> None:
    first, second = fakes
    failing, alive = add_provider(live_api, first.base_url), add_provider(live_api, second.base_url)
    alias = add_alias(live_api, {"provider_id": failing["id"], "upstream_model": "fake-fail", "priority": 0},
                      {"provider_id": alive["id"], "upstream_model": UPSTREAM_MODEL, "priority": 1})
    account = live_api.new_account("fail")
    before = len(second.seen)
    spoken = client_for(live_api, account).audio.speech.create(model=alias, voice="alloy", input="over")
    assert spoken.content == speech_bytes("over") and len(second.seen) == before + 1
    [row] = usage_rows(live_api, account, 1)
    assert (row["backend"], row["status"]) == (alive["name"], "ok")


def test_limits_count_forwarded_requests(live_api: LiveApi, fakes: Any) -> None:
    alias, _ = alias_on(live_api, fakes[0])
    account = live_api.new_account("limited")
    limited = httpx.put(f"{live_api.base_url}/admin/users/{account.user_id}/limits", headers=live_api.admin,
                        json={"requests_per_minute": 1})
    assert limited.status_code == 200, limited.text
    client = client_for(live_api, account)
    client.moderations.create(model=alias, input="one")
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model=alias, input="two")
    assert [r["status"] for r in usage_rows(live_api, account, 2)] == ["ok", "rejected"]


async def test_forwarded_requests_take_the_users_concurrency_slots(live_api: LiveApi, fakes: Any) -> None:
    fake = fakes[0]
    alias, _ = alias_on(live_api, fake)
    account = live_api.new_account("slots")
    fake.hold_speech.clear()
    async with httpx.AsyncClient(base_url=live_api.base_url, headers=account.headers, timeout=30) as http:
        streams = [await http.send(http.build_request("POST", "/v1/audio/speech", json={
            "model": alias, "voice": "alloy", "input": "held"}), stream=True) for _ in range(SLOTS)]
        refused = await http.post("/v1/embeddings", json={"model": alias, "input": "one too many"})
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "concurrency_limit_exceeded"
        fake.hold_speech.set()
        for stream in streams:
            assert await stream.aread() == speech_bytes("held")
        assert (await http.post("/v1/embeddings", json={"model": alias, "input": "now"})).status_code == 200


SLOTS = 16  # LLMWS_MAX_CONCURRENT_PER_USER's default


def test_bad_input_is_a_4xx_in_the_api_error_shape(live_api: LiveApi, fakes: Any) -> None:
    alias, _ = alias_on(live_api, fakes[0])
    account = live_api.new_account("bad")

    def post(path: str, **kwargs: Any) -> dict[str, Any]:
        answer = httpx.post(f"{live_api.base_url}/v1{path}", headers={**account.headers,
                                                                      **kwargs.pop("headers", {})}, **kwargs)
        assert 400 <= answer.status_code < 500, answer.text
        assert set(answer.json()) == {"error"} and set(answer.json()["error"]) == {"message", "type", "param", "code"}
        return {"status": answer.status_code, **answer.json()["error"]}

    missing = post("/embeddings", json={"input": "no model"})
    assert (missing["status"], missing["code"], missing["param"]) == (400, "missing_field", "model")
    assert post("/embeddings", content=b"{not json", headers={"Content-Type": "application/json"})["status"] == 400
    no_model = post("/audio/transcriptions", files={"file": ("a.wav", b"RIFF")})
    assert (no_model["code"], no_model["param"]) == ("missing_field", "model")
    assert post("/audio/transcriptions", json={"model": alias})["code"] == "invalid_content_type"
    no_file = post("/audio/transcriptions", files={"model": (None, alias)})
    assert no_file["code"] == "missing_file"
    huge = post("/audio/transcriptions", data={"model": alias}, files={"file": ("a.wav", b"\0" * 1_100_000)})
    assert (huge["status"], huge["code"]) == (413, "body_too_large")
    local = post("/embeddings", json={"model": "tiny-chat", "input": "hi"})
    assert (local["status"], local["code"], local["param"]) == (400, "unsupported_by_local_engine", "model")
    assert "embeddings" in local["message"]
    assert usage_rows(live_api, account, 0, within_s=0) == []
