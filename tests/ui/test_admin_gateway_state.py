"""The view state of the providers, models and runners pages, against the real API (no browser): what the forms
send, what the tables show, and the refusals a page shows to the admin."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bench.fake_openai import MODELS, FakeUpstream
from tests.support.git_host import git_repo
from tests.ui.stack import UiStack
from ui.client import ApiClient, ApiError
from ui.views.admin_engine_state import DownloadState, LocalModelsState
from ui.views.admin_gateway_state import CatalogState, ProvidersState
from ui.views.admin_runners_state import RunnersState


@pytest.fixture
def admin(stack: UiStack) -> Iterator[ApiClient]:
    # Generous: stopping a runner waits for its process (SIGKILL after 10 s), slower still on a busy machine.
    client = ApiClient(stack.api.base_url, stack.admin_token, timeout_s=60)
    yield client
    client.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def make_provider(state: ProvidersState, base_url: str) -> dict:
    state.new()
    state.param.update(provider_name=unique("prov"), base_url=base_url, timeout_s=5.0)
    return state.save()


def test_a_provider_is_created_tested_edited_and_disabled(stack: UiStack, admin: ApiClient,
                                                          upstream: FakeUpstream) -> None:
    state = ProvidersState(admin)
    saved = make_provider(state, upstream.base_url)
    assert state.editing_id == saved["id"] and state.provider_name == saved["name"]
    row = next(row for row in state.table() if row["id"] == saved["id"])
    assert row["base URL"] == upstream.base_url and row["active"] is True

    result = state.test(saved["id"])
    assert result["ok"] and set(MODELS) <= set(result["models"])
    assert "fake-fast" in state.test_summary()

    state.kind = "vllm"
    state.save()
    state.set_active(saved["id"], False)
    seen = stack.api_get(f"/admin/providers/{saved['id']}", stack.admin_token)
    assert seen["kind"] == "vllm" and seen["is_active"] is False
    with pytest.raises(ApiError) as missing:
        state.edit(10**9)
    assert missing.value.status == 404


def test_a_provider_that_does_not_answer_fails_its_test(admin: ApiClient) -> None:
    state = ProvidersState(admin)
    saved = make_provider(state, "http://127.0.0.1:9/v1")  # the discard port: nothing listens
    result = state.test(saved["id"])
    assert not result["ok"] and "failed" in state.test_summary()


def test_aliases_are_written_as_deployment_lines(stack: UiStack, admin: ApiClient, upstream: FakeUpstream) -> None:
    provider = make_provider(ProvidersState(admin), upstream.base_url)
    state = CatalogState(admin)
    state.refresh()
    state.param.update(alias_name=unique("alias"), description="two ways",
                       deployments=f"{provider['name']} fake-fast\n\nlocal")
    saved = state.save()
    api_view = stack.api_get(f"/admin/models/{saved['id']}", stack.admin_token)
    assert [(d["provider_id"], d["upstream_model"]) for d in api_view["deployments"]] == [
        (provider["id"], "fake-fast"), (None, None)]
    row = next(row for row in state.table() if row["id"] == saved["id"])
    assert row["deployments"] == f"{provider['name']} fake-fast; local"

    state.deployments = f"{provider['name']} fake-quiet"
    state.save()
    api_view = stack.api_get(f"/admin/models/{saved['id']}", stack.admin_token)
    assert [d["upstream_model"] for d in api_view["deployments"]] == ["fake-quiet"]
    assert api_view["description"] == "two ways"

    # A deployment's context window and defaults (set through the API; the form has no fields for them) survive
    # a save from the form that keeps that deployment.
    tuned = httpx.put(f"{stack.api.base_url}/admin/models/{saved['id']}", headers=stack.admin_headers, json={
        "name": api_view["name"], "description": "two ways", "deployments": [
            {"provider_id": provider["id"], "upstream_model": "fake-quiet", "context_window": 2048,
             "defaults": {"temperature": 0.2}}]})
    assert tuned.status_code == 200, tuned.text
    state.refresh()
    state.edit(saved["id"])
    state.deployments += "\nlocal"
    state.save()
    kept = stack.api_get(f"/admin/models/{saved['id']}", stack.admin_token)["deployments"][0]
    assert (kept["context_window"], kept["defaults"]["temperature"]) == (2048, 0.2)

    for bad in ("nobody fake-fast", provider["name"], ""):
        state.deployments = bad
        with pytest.raises(ApiError):
            state.save()
    state.delete(saved["id"])
    assert saved["id"] not in [row["id"] for row in state.rows]
    assert state.editing_id is None


def test_the_loaded_model_cannot_be_picked_for_deletion(admin: ApiClient) -> None:
    state = LocalModelsState(admin)
    state.refresh()
    assert state.loaded == "tiny-chat" and "tiny-chat" in state.names
    with pytest.raises(ApiError) as in_use:
        state.ask_delete("tiny-chat")
    assert in_use.value.code == "model_in_use" and state.pending_delete is None
    with pytest.raises(ApiError):
        state.confirm_delete()  # nothing asked


def test_a_download_is_followed_to_completion_then_deleted_after_confirmation(
        stack: UiStack, admin: ApiClient, tmp_path: Path) -> None:
    source = git_repo(tmp_path / "repo", files_from=stack.folder / "models" / "tiny-chat")
    name = unique("dl")
    download = DownloadState(admin, source=source, folder_name=name)
    assert download.summary() == "No download started."
    download.start()
    deadline = time.monotonic() + 120
    while download.running:
        assert time.monotonic() < deadline, download.job
        time.sleep(0.3)
        download.poll()
    assert download.job is not None and download.job["status"] == "completed", download.job
    assert download.percent == 100 and download.summary().startswith(f"{name}: **completed**")
    assert download.summary().endswith(f"model {name}")

    models = LocalModelsState(admin)
    models.refresh()
    assert name in models.names
    models.ask_delete(name)
    assert models.pending_delete == name
    models.keep()
    assert models.pending_delete is None and name in models.names
    models.ask_delete(name)
    assert models.confirm_delete() == name
    listed = stack.api_get("/admin/engine/models", stack.admin_token)["data"]
    assert name not in [model["name"] for model in listed] and name not in models.names


def test_the_preview_is_the_exact_command_a_launch_would_run(stack: UiStack, admin: ApiClient) -> None:
    state = RunnersState(admin)
    state.load()
    assert "llmws" in [template["name"] for template in state.templates]
    state.param.update(template="llmws", model="tiny-chat", port="18231")
    preview = state.make_preview()
    expected = httpx.post(f"{stack.api.base_url}/admin/runners/preview", headers=stack.admin_headers,
                          json={"template": "llmws", "model": "tiny-chat", "port": 18231}).json()
    assert preview == expected and "18231" in preview["argv"]
    state.port = "eighty"
    with pytest.raises(ApiError) as refused:
        state.spec()
    assert refused.value.param == "port"
    state.param.update(port="", model="../outside")
    with pytest.raises(ApiError) as outside:
        state.make_preview()
    assert outside.value.param == "model"


def follow_logs(state: RunnersState) -> None:
    # In a thread of its own: Playwright's sync API keeps an event loop running in this one once a browser test ran.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, state.follow_logs()).result()


def test_a_launched_runner_shows_its_log_and_stops(stack: UiStack, admin: ApiClient) -> None:
    state = RunnersState(admin)
    state.load()
    state.param.update(template="llmws", model="tiny-chat")
    state.make_preview()
    runner = state.launch()
    try:
        assert state.selected == runner["id"] and runner["id"] in [row["id"] for row in state.table()]
        deadline = time.monotonic() + 60
        while not state.log:
            assert time.monotonic() < deadline, "no log line within 60 s"
            follow_logs(state)
        numbers = [number for number, _line in state.log]
        assert numbers == sorted(set(numbers)) and numbers[0] == 1
    finally:
        state.stop(runner["id"])
    deadline = time.monotonic() + 30
    while not state.log_ended:  # the log ends once the runner has stopped and every line is read
        assert time.monotonic() < deadline, "the log did not end within 30 s of stopping"
        follow_logs(state)
    state.refresh()
    assert next(row for row in state.rows if row["id"] == runner["id"])["status"] == "stopped"
    assert state.log_text()
    httpx.delete(f"{stack.api.base_url}/admin/runners/{runner['id']}", headers=stack.admin_headers)
