"""Model downloads through a real `llmws serve`: over the WebSocket (progress and log events in the session) and
the admin REST API (jobs, refusals), from git repositories made by the test and reached by file:// URLs."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.api.live import LiveApi, wait_ready
from tests.api.test_websocket import hello, inference, receive, until_done, ws_url
from tests.engine.test_downloads import git_repo


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> str:
    return git_repo(tmp_path_factory.mktemp("repo") / "tiny", tiny_model_dir)


def admin_socket_events(live_api: LiveApi, message: dict[str, Any], last: str) -> list[dict[str, Any]]:
    with connect(ws_url(live_api.base_url)) as ws:
        ws.send(json.dumps({"type": "hello", "token": live_api.admin_token}))
        assert receive(ws)["type"] == "welcome"
        ws.send(json.dumps(message))
        events = [receive(ws)]
        while events[-1]["type"] not in {last, "error"}:
            events.append(receive(ws))
    return events


def wait_for_job(live_api: LiveApi, job_id: str) -> dict[str, Any]:
    for _ in range(300):
        job = httpx.get(f"{live_api.base_url}/admin/engine/downloads/{job_id}", headers=live_api.admin).json()
        if job["status"] != "running":
            return job
        time.sleep(0.1)
    raise AssertionError(f"download {job_id} still running: {job}")


def test_an_admin_downloads_a_model_over_the_websocket_and_serves_it(live_api: LiveApi, tiny_repo: str) -> None:
    name = f"fetched-{uuid.uuid4().hex[:6]}"
    events = admin_socket_events(live_api, {"type": "download_model", "repo": tiny_repo, "target_dir": name},
                                 "download_finished")
    kinds = [event["type"] for event in events]
    assert kinds[0] == "download_started" and kinds[-1] == "download_finished", kinds
    assert "progress" in kinds and "log" in kinds
    assert [event["seq"] for event in events] == list(range(events[0]["seq"], events[0]["seq"] + len(events)))
    finished = events[-1]
    assert finished["status"] == "completed", finished
    assert finished["model"]["name"] == name and finished["model"]["format"] == "safetensors"
    on_disk = Path(live_api.env["LLMWS_DATA_DIR"]) / "models" / name
    assert (on_disk / "config.json").is_file() and not (on_disk / ".git").exists()
    listed = httpx.get(f"{live_api.base_url}/admin/engine/models", headers=live_api.admin).json()["data"]
    assert name in [model["name"] for model in listed]

    # It loads and answers, then the module's model comes back.
    try:
        switched = admin_socket_events(live_api, {"type": "switch_model", "model": name}, "model_switched")
        assert switched[-1]["type"] == "model_switched", switched
        with connect(ws_url(live_api.base_url)) as ws:
            hello(ws, live_api.new_account("dl"))
            inference(ws, "Say something.", max_tokens=5)
            done = until_done(ws)[-1]
        assert done["type"] == "done" and done["usage"]["completion_tokens"] > 0, done
    finally:
        admin_socket_events(live_api, {"type": "switch_model", "model": "tiny-chat"}, "model_switched")
        wait_ready(live_api.server)


def test_downloads_are_for_admins(live_api: LiveApi, tiny_repo: str) -> None:
    account = live_api.new_account("dlplain")
    refused = httpx.post(f"{live_api.base_url}/admin/engine/downloads", headers=account.headers,
                         json={"source": tiny_repo, "name": "not-mine"})
    assert refused.status_code == 403
    with connect(ws_url(live_api.base_url)) as ws:
        hello(ws, account)
        ws.send(json.dumps({"type": "download_model", "source": tiny_repo, "name": "not-mine"}))
        assert receive(ws)["code"] == "admin_required"
    assert not (Path(live_api.env["LLMWS_DATA_DIR"]) / "models" / "not-mine").exists()


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"source": "ftp://example.org/model"}, 400, "invalid_download"),
    ({"source": "ext::sh -c touch% /tmp/pwned"}, 400, "invalid_download"),
    ({"source": "owner/model", "name": "../../escape"}, 400, "invalid_download"),
    ({"source": "owner/model", "name": "/etc"}, 400, "invalid_download"),
    ({"source": "owner/model", "name": "tiny-chat"}, 409, "model_exists"),  # the served model's name
])
def test_bad_sources_names_and_taken_names_are_refused_before_anything_starts(
    live_api: LiveApi, body: dict[str, str], status: int, code: str
) -> None:
    before = httpx.get(f"{live_api.base_url}/admin/engine/downloads", headers=live_api.admin).json()["data"]
    answer = httpx.post(f"{live_api.base_url}/admin/engine/downloads", headers=live_api.admin, json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
    after = httpx.get(f"{live_api.base_url}/admin/engine/downloads", headers=live_api.admin).json()["data"]
    assert len(after) == len(before)


def test_a_failed_download_is_a_failed_job_with_its_reason_and_leaves_nothing(
    live_api: LiveApi, tmp_path: Path
) -> None:
    not_a_model = git_repo(tmp_path / "notes", extra={"README.md": b"just notes"})
    for source, reason in ((not_a_model, "not a model"), ((tmp_path / "missing").as_uri(), "fetch failed")):
        started = httpx.post(f"{live_api.base_url}/admin/engine/downloads", headers=live_api.admin,
                             json={"source": source, "name": "will-fail"})
        assert started.status_code == 202, started.text
        job = wait_for_job(live_api, started.json()["id"])
        assert job["status"] == "failed" and reason in job["error"], job
        assert job["log"], "the fetcher's output is kept for the admin to read"
        assert not (Path(live_api.env["LLMWS_DATA_DIR"]) / "models" / "will-fail").exists()
    listed = httpx.get(f"{live_api.base_url}/admin/engine/downloads", headers=live_api.admin).json()["data"]
    assert any(job["name"] == "will-fail" and job["status"] == "failed" for job in listed)
