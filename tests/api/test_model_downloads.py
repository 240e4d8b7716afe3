"""Model downloads through a real `llmws serve`: over the WebSocket (progress and log events in the session) and
the admin REST API (jobs, refusals, the audit log), from git repositories made by the test and reached by file://
URLs, or over HTTP from a git host that wants a password."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from websockets.sync.client import connect

from api.settings import Settings
from db.session import create_engine
from tests.support.git_host import FakeGitHost, git_repo
from tests.support.live import LiveApi, wait_ready
from tests.support.ws import hello, inference, receive, until_done, ws_url

SECRET = "s3cret-token-in-the-url-77"


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


def audit_entries(live_api: LiveApi, action: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{live_api.base_url}/admin/audit", params={"action": action}, headers=live_api.admin)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def stored_download_jobs(live_api: LiveApi) -> str:
    """Every download job row as the database holds it, as text."""
    url = Settings(_env_file=None, database_url=live_api.env["LLMWS_DATABASE_URL"]).resolved_database_url  # type: ignore[call-arg]

    async def read() -> str:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                rows = (await connection.execute(text("SELECT status, detail, error FROM background_jobs"))).all()
        finally:
            await engine.dispose()
        return repr([tuple(row) for row in rows])

    return asyncio.run(read())


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

    deleted = admin_socket_events(live_api, {"type": "delete_model", "model": name}, "model_deleted")
    assert deleted[-1]["type"] == "model_deleted" and not on_disk.exists(), deleted
    # Each step is in the audit log, by the admin who did it over the socket.
    admin_id = audit_entries(live_api, "local_model.download_started")[0]["actor_user_id"]
    job = events[0]["job_id"]
    for action, target in (("local_model.download_started", job), ("local_model.download_finished", job),
                           ("local_model.switched", name), ("local_model.deleted", name)):
        entries = [entry for entry in audit_entries(live_api, action) if entry["subject"] == name]
        assert len(entries) == 1 and entries[0]["target_id"] == target, (action, entries)
        assert entries[0]["actor_user_id"] == admin_id is not None
    finished = [entry for entry in audit_entries(live_api, "local_model.download_finished")
                if entry["subject"] == name]
    assert finished[0]["detail"]["status"] == "completed"


def test_credentials_in_a_git_url_are_used_for_the_clone_and_never_shown_logged_or_stored(
    live_api: LiveApi, tiny_repo: str, tmp_path: Path
) -> None:
    (tmp_path / "served").mkdir()
    host = FakeGitHost(tmp_path / "served", "alice", SECRET)
    path = host.add("private", tiny_repo)
    base = host.start()
    name = f"private-{uuid.uuid4().hex[:6]}"
    try:
        with_credentials = base.replace("http://", f"http://alice:{SECRET}@") + path
        events = admin_socket_events(live_api, {"type": "download_model", "source": with_credentials,
                                                "name": name}, "download_finished")
        assert events[-1]["status"] == "completed", events[-1]  # git had the credentials
        assert events[0]["source"] == base + path
        refused = httpx.post(f"{live_api.base_url}/admin/engine/downloads", headers=live_api.admin,
                             json={"source": with_credentials.replace(path, "/missing.git"), "name": f"{name}-x"})
        assert refused.status_code == 202, refused.text
        failed = wait_for_job(live_api, refused.json()["id"])
        assert failed["status"] == "failed" and failed["log"], failed
    finally:
        host.stop()
    data_dir = Path(live_api.env["LLMWS_DATA_DIR"])
    shown = {
        "the socket's events": json.dumps(events),
        "the REST answers": refused.text + json.dumps(failed),
        "the job listing": httpx.get(f"{live_api.base_url}/admin/engine/downloads", headers=live_api.admin).text,
        "the audit log": httpx.get(f"{live_api.base_url}/admin/audit", headers=live_api.admin).text,
        "the job rows": stored_download_jobs(live_api),
        "the log files": "".join(log.read_text(errors="replace") for log in (data_dir / "logs").glob("*")),
        "the console": live_api.server.console.read_text(errors="replace"),
    }
    assert name in shown["the job listing"] and name in shown["the job rows"] and base + path in shown["the log files"]
    assert [where for where, content in shown.items() if SECRET in content] == []


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


@pytest.mark.parametrize(("message", "code"), [
    ({"repo": 5}, "missing_field"),
    ({"source": ""}, "missing_field"),
    ({"source": "owner/model", "target_dir": 7}, "invalid_value"),
    ({"source": "owner/" + "m" * 600}, "invalid_value"),  # the REST schema's limit holds on the socket too
    ({"source": "owner/model", "name": "n" * 101}, "invalid_value"),
])
def test_the_socket_checks_a_downloads_arguments_as_the_rest_api_does(
    live_api: LiveApi, message: dict[str, Any], code: str
) -> None:
    events = admin_socket_events(live_api, {"type": "download_model", **message}, "download_started")
    assert [(event["type"], event.get("code")) for event in events] == [("error", code)], events
