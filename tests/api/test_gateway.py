"""The gateway through a real `llmws serve`: providers, aliases routed over deployments with failover, upstream
streams forwarded with the model rewritten, usage taken from the upstream or estimated, and a client's disconnect
closing the upstream stream. Upstreams are a fake OpenAI server in this process and a second `llmws serve`."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import openai
import pytest

from bench.fake_openai import WORDS, FakeUpstream
from tests.support.access import admin_token_of, bearer
from tests.support.gateway import add_alias, add_provider, client_for, unique, usage_rows
from tests.support.live import LiveApi, start_server, wait_ready
from tests.support.net import free_port

ANSWER = "".join(WORDS)


def test_an_alias_on_an_upstream_streams_and_answers_through_the_openai_client(
    live_api: LiveApi, upstream: FakeUpstream
) -> None:
    provider = add_provider(live_api, upstream.base_url, api_key="sk-upstream-secret-123")
    alias = add_alias(live_api, [{"provider_id": provider["id"], "upstream_model": "fake-fast"}])
    account = live_api.new_account("gw")
    client = client_for(live_api, account)

    chunks = list(client.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert {chunk.model for chunk in chunks} == {alias}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(WORDS)
    answer = client.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == ANSWER and answer.model == alias
    assert answer.usage is not None and answer.usage.prompt_tokens == 7

    # The upstream got its own model name, the stored key, and a request for usage it reports.
    assert upstream.requests[-2]["model"] == "fake-fast" and upstream.requests[-2]["stream_options"]
    assert upstream.authorization[-1] == "Bearer sk-upstream-secret-123"
    rows = usage_rows(live_api, account, 2)
    assert [(r["model"], r["backend"], r["status"], r["count_source"], r["completion_tokens"]) for r in rows] == [
        (alias, provider["name"], "ok", "upstream", len(WORDS))] * 2
    listed = [model.id for model in client.models.list().data]
    assert alias in listed


def test_without_a_usage_report_tokens_are_estimated_and_labelled_so(live_api: LiveApi,
                                                                      upstream: FakeUpstream) -> None:
    provider = add_provider(live_api, upstream.base_url)
    alias = add_alias(live_api, [{"provider_id": provider["id"], "upstream_model": "fake-quiet"}])
    account = live_api.new_account("gwq")
    chunks = list(client_for(live_api, account).chat.completions.create(
        model=alias, messages=[{"role": "user", "content": "hi"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert all(chunk.usage is None for chunk in chunks)  # not asked for, not sent
    [row] = usage_rows(live_api, account, 1)
    assert row["count_source"] == "estimated" and row["status"] == "ok"
    assert 0 < row["completion_tokens"] <= 3 * len(WORDS) and row["prompt_tokens"] > 0


def test_a_dead_deployment_fails_over_to_the_next(live_api: LiveApi, upstream: FakeUpstream) -> None:
    dead = add_provider(live_api, f"http://127.0.0.1:{free_port()}/v1")
    failing = add_provider(live_api, upstream.base_url)
    alive = add_provider(live_api, upstream.base_url)
    alias = add_alias(live_api, [
        {"provider_id": dead["id"], "upstream_model": "fake-fast", "priority": 0},
        {"provider_id": failing["id"], "upstream_model": "fake-fail", "priority": 1},
        {"provider_id": alive["id"], "upstream_model": "fake-fast", "priority": 2},
    ])
    account = live_api.new_account("gwf")
    client = client_for(live_api, account)
    for _ in range(3):
        answer = client.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == ANSWER
        streamed = client.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}],
                                                  stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == ANSWER
    assert {row["backend"] for row in usage_rows(live_api, account, 6)} == {alive["name"]}
    health = httpx.get(f"{live_api.base_url}/admin/providers/{dead['id']}", headers=live_api.admin).json()
    assert health["health"]["status"] == "unhealthy"


def test_an_upstream_dying_mid_stream_ends_with_an_error_frame_and_done(live_api: LiveApi,
                                                                        upstream: FakeUpstream) -> None:
    provider = add_provider(live_api, upstream.base_url)
    alias = add_alias(live_api, [{"provider_id": provider["id"], "upstream_model": "fake-die"}])
    account = live_api.new_account("gwd")
    with httpx.stream("POST", f"{live_api.base_url}/v1/chat/completions", headers=account.headers, timeout=30,
                      json={"model": alias, "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]" and '"error"' in lines[-2] and "upstream_error" in lines[-2]
    assert sum('"content"' in line for line in lines[:-2]) >= 3  # what came before the failure got through
    [row] = usage_rows(live_api, account, 1)
    assert row["status"] == "error" and row["completion_tokens"] > 0
    # And the gateway serves the next request through the same provider (once its health check has seen it up).
    healthy = add_alias(live_api, [{"provider_id": provider["id"], "upstream_model": "fake-fast"}])
    deadline = time.monotonic() + 10
    while (after := httpx.post(f"{live_api.base_url}/v1/chat/completions", headers=account.headers, timeout=30,
                               json={"model": healthy, "messages": [{"role": "user", "content": "hi"}]})
           ).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert after.status_code == 200, after.text
    assert after.json()["choices"][0]["message"]["content"]


def test_a_client_disconnect_closes_the_upstream_stream_within_a_second(live_api: LiveApi,
                                                                        upstream: FakeUpstream) -> None:
    provider = add_provider(live_api, upstream.base_url)
    alias = add_alias(live_api, [{"provider_id": provider["id"], "upstream_model": "fake-slow"}])
    account = live_api.new_account("gwc")
    before = len(upstream.disconnects)
    with httpx.stream("POST", f"{live_api.base_url}/v1/chat/completions", headers=account.headers, timeout=30,
                      json={"model": alias, "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
        received = 0
        for line in r.iter_lines():
            received += '"content"' in line
            if received >= 5:
                break
        left_at = time.monotonic()
    while len(upstream.disconnects) == before and time.monotonic() - left_at < 3:
        time.sleep(0.01)
    assert len(upstream.disconnects) > before, "the upstream stream was never closed"
    assert upstream.disconnects[-1] - left_at < 1.0
    [row] = usage_rows(live_api, account, 1)
    assert row["status"] == "cancelled" and row["completion_tokens"] >= 4


def test_an_alias_can_be_kept_to_admins(live_api: LiveApi, upstream: FakeUpstream) -> None:
    provider = add_provider(live_api, upstream.base_url)
    alias = add_alias(live_api, [{"provider_id": provider["id"], "upstream_model": "fake-fast"}],
                      allowed_roles=["admin"], defaults={"system_prompt": "Be terse."})
    plain = client_for(live_api, live_api.new_account("gwr"))
    assert alias not in [model.id for model in plain.models.list().data]
    with pytest.raises(openai.NotFoundError):
        plain.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}])
    admin = openai.OpenAI(base_url=f"{live_api.base_url}/v1", api_key=live_api.admin_token, max_retries=0)
    assert admin.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}]
                                         ).choices[0].message.content == ANSWER
    assert upstream.requests[-1]["messages"][0] == {"role": "system", "content": "Be terse."}


def test_bad_provider_and_alias_bodies_are_refused(live_api: LiveApi) -> None:
    for body in ({"name": "x", "base_url": "not a url"}, {"name": "../x", "base_url": "http://127.0.0.1:1/v1"},
                 {"name": "x", "base_url": "http://127.0.0.1:1/v1", "timeout_s": 0}):
        answer = httpx.post(f"{live_api.base_url}/admin/providers", headers=live_api.admin, json=body)
        assert answer.status_code == 400, answer.text
    missing = httpx.post(f"{live_api.base_url}/admin/models", headers=live_api.admin,
                         json={"name": unique("a"), "deployments": [{"provider_id": 999999, "upstream_model": "m"}]})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "deployments"
    account = live_api.new_account("gwp")
    assert httpx.get(f"{live_api.base_url}/admin/providers", headers=account.headers).status_code == 403


def test_another_llmws_is_an_upstream_and_its_stop_marks_it_unhealthy(
    live_api: LiveApi, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> None:
    folder = tmp_path_factory.mktemp("second")
    shutil.copyfile(sqlite_template, folder / "second.db")
    env = {**live_api.env, "LLMWS_DATA_DIR": str(folder / "var"),
           "LLMWS_DATABASE_URL": f"sqlite:///{folder / 'second.db'}"}
    second = start_server(folder, env, "second")
    try:
        wait_ready(second)
        key = _api_key_on(second.base_url)
        provider = add_provider(live_api, f"{second.base_url}/v1", api_key=key, kind="llmws")
        tested = httpx.post(f"{live_api.base_url}/admin/providers/{provider['id']}/test", headers=live_api.admin)
        assert tested.json()["ok"] and "tiny-chat" in tested.json()["models"]
        alias = add_alias(live_api, [{"provider_id": provider["id"], "upstream_model": "tiny-chat"}])
        client = client_for(live_api, live_api.new_account("gw2"))
        streamed = client.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}],
                                                  stream=True, max_tokens=8, temperature=0)
        text_streamed = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        answer = client.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=8, temperature=0)
        assert text_streamed and answer.choices[0].message.content == text_streamed
        assert answer.model == alias
    finally:
        second.stop()
    deadline = time.monotonic() + 10
    status = None
    while time.monotonic() < deadline:
        status = httpx.get(f"{live_api.base_url}/admin/providers/{provider['id']}",
                           headers=live_api.admin).json()["health"]["status"]
        if status == "unhealthy":
            break
        time.sleep(0.2)
    assert status == "unhealthy"


def _api_key_on(base_url: str) -> str:
    key = httpx.post(f"{base_url}/v1/keys", json={"name": "gateway"}, headers=bearer(admin_token_of(base_url)))
    return key.json()["key"]


def test_native_chat_and_websocket_sessions_use_an_alias_too(live_api: LiveApi, upstream: FakeUpstream) -> None:
    import json

    from websockets.sync.client import connect

    from tests.support.ws import hello, until_done, ws_url

    dead = add_provider(live_api, f"http://127.0.0.1:{free_port()}/v1")
    alive = add_provider(live_api, upstream.base_url)
    alias = add_alias(live_api, [{"provider_id": dead["id"], "upstream_model": "fake-fast"},
                                 {"provider_id": alive["id"], "upstream_model": "fake-fast", "priority": 1}])
    account = live_api.new_account("gwn")
    answer = httpx.post(f"{live_api.base_url}/v1/chat", headers=account.headers, timeout=30,
                        json={"message": "hi", "model": alias}).json()
    assert answer["message"]["content"] == ANSWER and answer["model"] == alias
    assert answer["usage"]["completion_tokens"] == len(WORDS)  # the upstream's report
    with connect(ws_url(live_api.base_url)) as ws:
        hello(ws, account)
        ws.send(json.dumps({"type": "inference", "prompt": {"user": "hi"}, "config": {"model": alias}}))
        done = until_done(ws)[-1]
    assert done["type"] == "done" and done["text"] == ANSWER, done
    assert {row["backend"] for row in usage_rows(live_api, account, 2)} == {alive["name"]}


def test_provider_health_shows_in_readyz_and_metrics(live_api: LiveApi, upstream: FakeUpstream) -> None:
    alive = add_provider(live_api, upstream.base_url)
    dead = add_provider(live_api, f"http://127.0.0.1:{free_port()}/v1")
    deadline = time.monotonic() + 10
    while True:  # the background check runs every second here
        ready = httpx.get(f"{live_api.base_url}/readyz", headers=live_api.admin).json()["checks"]["providers"]
        ready = ready["providers"]
        if ready.get(alive["name"]) == "healthy" and ready.get(dead["name"]) == "unhealthy":
            break
        assert time.monotonic() < deadline, ready
        time.sleep(0.2)
    metrics = httpx.get(f"{live_api.base_url}/metrics").text
    assert f'llmws_provider_up{{provider="{alive["name"]}"}} 1.0' in metrics
    assert f'llmws_provider_up{{provider="{dead["name"]}"}} 0.0' in metrics
    assert httpx.get(f"{live_api.base_url}/readyz").status_code == 200  # a dead upstream does not unready us


def test_readyz_tells_anyone_the_verdicts_and_only_an_admin_the_details(
    live_api: LiveApi, upstream: FakeUpstream
) -> None:
    provider = add_provider(live_api, upstream.base_url)
    admin_key = httpx.post(f"{live_api.base_url}/v1/keys", json={"name": "probe"}, headers=live_api.admin)
    terse = {"status": "ready", "checks": {name: {"ok": True} for name in
                                           ("database", "migrations", "engine", "providers")}}
    callers = {"anonymous": {}, "non-admin": live_api.new_account("probe").headers,
               "invalid token": {"Authorization": "Bearer not-a-token"}, "malformed": {"Authorization": "Basic x"}}
    for caller, headers in callers.items():
        ready = httpx.get(f"{live_api.base_url}/readyz", headers=headers)
        assert (ready.status_code, ready.json()) == (200, terse), caller
        assert provider["name"] not in ready.text and "/" not in ready.text, caller
    for headers in (live_api.admin, {"Authorization": f"Bearer {admin_key.json()['key']}"}):
        checks = httpx.get(f"{live_api.base_url}/readyz", headers=headers).json()["checks"]
        assert provider["name"] in checks["providers"]["providers"] and checks["engine"]["model"]


def test_cached_callers_still_meet_revocation_limits_validation_and_get_tools_through(
    live_api: LiveApi, upstream: FakeUpstream
) -> None:
    """Repeat callers are served past the router (their credential is cached); nothing the route checks may be
    lost on the way."""
    from tests.support.limits import set_limits, within_one_minute

    provider = add_provider(live_api, upstream.base_url)
    alias = add_alias(live_api, [{"provider_id": provider["id"], "upstream_model": "fake-fast"}])
    account = live_api.new_account("gwfast")
    url = f"{live_api.base_url}/v1/chat/completions"
    hello = {"model": alias, "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(2):
        assert httpx.post(url, headers=account.headers, json=hello).status_code == 200
    # The request's own fields reach the upstream, tools included (the upstream judges them).
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    assert httpx.post(url, headers=account.headers, json={**hello, "tools": tools}).status_code == 200
    assert upstream.requests[-1]["tools"] == tools
    bad = httpx.post(url, headers=account.headers, json={**hello, "temperature": 5})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "temperature"
    # Limits set now count from the next request.
    within_one_minute()
    set_limits(live_api, f"keys/{account.key_id}", requests_per_minute=2)
    statuses = [httpx.post(url, headers=account.headers, json=hello).status_code for _ in range(3)]
    assert statuses[-1] == 429, statuses
    # A revoked key is refused at once.
    revoked = httpx.delete(f"{live_api.base_url}/admin/keys/{account.key_id}", headers=live_api.admin)
    assert revoked.status_code in (200, 204), revoked.text
    assert httpx.post(url, headers=account.headers, json=hello).status_code == 401


def test_an_alias_on_the_local_engine_applies_its_defaults(live_api: LiveApi) -> None:
    alias = add_alias(live_api, [{"provider_id": None}], defaults={"max_tokens": 3, "temperature": 0})
    account = live_api.new_account("gwl")
    client = client_for(live_api, account)
    answer = client.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}])
    assert answer.model == alias and answer.usage is not None and answer.usage.completion_tokens <= 3
    chunks = list(client.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}],
                                                 stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer.choices[0].message.content
    assert {(row["backend"], row["model"]) for row in usage_rows(live_api, account, 2)} == {("local", alias)}
