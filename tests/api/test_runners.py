"""Runners through a real `llmws serve`: launches only from the allowlist with validated parameters (never a
shell), and a second LLMWS started as a runner that registers itself as a provider the gateway routes to; and, in
the app, a runner whose output lines are longer than the reader's limit."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from api.services.gateway.runner_templates import LaunchPlan, Template, free_port
from api.services.gateway.runners import LINE_CHARS
from tests.support.access import bearer
from tests.support.gateway import add_alias, client_for
from tests.support.live import LiveApi


def runners(live_api: LiveApi) -> list[dict[str, Any]]:
    return httpx.get(f"{live_api.base_url}/admin/runners", headers=live_api.admin).json()["data"]


@pytest.mark.parametrize(("body", "param"), [
    ({"template": "bash", "model": "tiny-chat"}, "template"),
    ({"template": "/bin/sh", "model": "tiny-chat"}, "template"),
    ({"template": "llmws", "model": "tiny-chat; rm -rf /"}, "model"),
    ({"template": "llmws", "model": "$(touch /tmp/llmws-pwned)"}, "model"),
    ({"template": "llmws", "model": "../../../../etc/passwd"}, "model"),
    ({"template": "llmws", "model": "/etc/passwd"}, "model"),
    ({"template": "llmws", "model": "tiny-chat", "extras": ["--debug; rm -rf /"]}, "extras"),
    ({"template": "llmws", "model": "tiny-chat", "port": 22}, "port"),
    ({"template": "llmws", "model": "tiny-chat", "context": 4096}, "context"),
])
def test_launches_outside_the_allowlist_or_with_shell_tricks_are_refused(live_api: LiveApi, body: dict[str, Any],
                                                                         param: str) -> None:
    before = runners(live_api)
    for route in ("/admin/runners/preview", "/admin/runners"):
        answer = httpx.post(f"{live_api.base_url}{route}", headers=live_api.admin, json=body)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["param"] == param
    assert runners(live_api) == before


def test_runners_are_for_admins_and_the_preview_is_the_exact_command(live_api: LiveApi) -> None:
    account = live_api.new_account("run")
    body = {"template": "llmws", "model": "tiny-chat", "port": 45678}
    assert httpx.post(f"{live_api.base_url}/admin/runners", headers=account.headers, json=body).status_code == 403
    assert httpx.get(f"{live_api.base_url}/admin/runners", headers=account.headers).status_code == 403
    preview = httpx.post(f"{live_api.base_url}/admin/runners/preview", headers=live_api.admin, json=body).json()
    assert preview["argv"][1:] == ["serve", "--port", "45678"] and preview["argv"][0].endswith("/llmws")
    assert preview["command"].endswith("llmws serve --port 45678")


def test_an_llmws_runner_registers_itself_and_serves_through_the_gateway(live_api: LiveApi) -> None:
    launched = httpx.post(f"{live_api.base_url}/admin/runners", headers=live_api.admin,
                          json={"template": "llmws", "model": "tiny-chat", "name": "second"})
    assert launched.status_code == 201, launched.text
    runner_id = launched.json()["id"]
    deadline = time.monotonic() + 90
    while (runner := httpx.get(f"{live_api.base_url}/admin/runners/{runner_id}",
                               headers=live_api.admin).json())["provider_id"] is None:
        assert runner["status"] in ("starting", "running"), runner
        assert time.monotonic() < deadline, "the runner never registered"
        time.sleep(0.3)
    assert runner["status"] == "running" and runner["pid"] and runner["uptime_s"] is not None
    provider = httpx.get(f"{live_api.base_url}/admin/providers/{runner['provider_id']}", headers=live_api.admin)
    assert provider.json()["base_url"] == runner["base_url"] and provider.json()["has_api_key"]

    alias = add_alias(live_api, [{"provider_id": runner["provider_id"], "upstream_model": "tiny-chat"}])
    client = client_for(live_api, live_api.new_account("runuse"))
    streamed = client.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}],
                                              stream=True, max_tokens=8, temperature=0)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    answer = client.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=8, temperature=0)
    assert text and answer.choices[0].message.content == text

    stopped = httpx.post(f"{live_api.base_url}/admin/runners/{runner_id}/stop", headers=live_api.admin, timeout=30)
    assert stopped.json()["status"] == "stopped" and stopped.json()["pid"] is None
    health = httpx.get(f"{live_api.base_url}/admin/providers/{runner['provider_id']}", headers=live_api.admin)
    assert health.json()["health"]["status"] == "unhealthy" and not health.json()["is_active"]
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert refused.value.status_code == 503

    # The log, from the start, over SSE; it ends because the runner has stopped.
    with httpx.stream("GET", f"{live_api.base_url}/admin/runners/{runner_id}/logs", headers=live_api.admin,
                      timeout=30) as response:
        lines = [json.loads(line[5:])["line"] for line in response.iter_lines() if line.startswith("data: {\"line")]
    assert any("started pid" in line for line in lines) and any("registering as a provider" in line
                                                               for line in lines)
    assert any("exited with code" in line for line in lines)
    assert httpx.delete(f"{live_api.base_url}/admin/runners/{runner_id}", headers=live_api.admin).status_code == 204


def test_a_runner_with_restart_comes_back_after_a_crash(live_api: LiveApi) -> None:
    import os
    import signal

    launched = httpx.post(f"{live_api.base_url}/admin/runners", headers=live_api.admin,
                          json={"template": "llmws", "model": "tiny-chat", "name": "phoenix", "restart": True})
    runner_id = launched.json()["id"]

    def wait_running(restarts: int) -> dict[str, Any]:
        deadline = time.monotonic() + 90
        while True:
            runner = httpx.get(f"{live_api.base_url}/admin/runners/{runner_id}", headers=live_api.admin).json()
            if runner["status"] == "running" and runner["restarts"] == restarts:
                return runner
            assert time.monotonic() < deadline, runner
            time.sleep(0.3)

    try:
        first = wait_running(0)
        os.kill(first["pid"], signal.SIGKILL)  # a crash, not a stop
        second = wait_running(1)
        # "running" means the gateway routes to it: its provider is registered by then
        assert first["provider_id"] is not None
        assert second["pid"] != first["pid"] and second["provider_id"] == first["provider_id"]
        provider = httpx.get(f"{live_api.base_url}/admin/providers/{second['provider_id']}",
                             headers=live_api.admin).json()
        assert provider["is_active"]
    finally:
        httpx.post(f"{live_api.base_url}/admin/runners/{runner_id}/stop", headers=live_api.admin, timeout=30)


LONG_LINES = """
import sys, time
sys.stdout.write("x" * (2 << 20) + "\\n")  # 2 MiB, twice the reader's limit
for tick in range(100000):
    print(f"tick {tick}", flush=True)
    if tick == 2:
        sys.stdout.write("y" * (3 << 19))  # 1.5 MiB and then the line goes on
        sys.stdout.write(" end of the long line\\n")
    time.sleep(0.05)
"""


async def test_a_runner_printing_lines_over_the_read_limit_is_still_watched_and_stopped(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str, tmp_path: Path
) -> None:
    """A process that prints a 2 MiB line: the line is kept cut and marked, the lines after it arrive, and the
    admin's stop (audited) ends it."""
    argv = [sys.executable, "-c", LONG_LINES]
    template = Template("printer", "prints long lines", tuple(argv), model=(), port=(), host=())
    runner = await app.state.services.runners.launch(LaunchPlan(template, argv, tmp_path, free_port()), "printer")
    deadline = time.monotonic() + 60
    while not any(line == "tick 5" for line in runner.lines):
        assert runner.task is not None and not runner.task.done(), list(runner.lines)[-3:]
        assert time.monotonic() < deadline, list(runner.lines)[-3:]
        await asyncio.sleep(0.1)
    lines = [line for line in runner.lines if not line.startswith("[llmws]")]
    assert lines[0] == "x" * LINE_CHARS + f" [… cut: the line had {(2 << 20) + 1} bytes]"
    assert lines[1:4] == ["tick 0", "tick 1", "tick 2"]
    assert lines[4] == "y" * LINE_CHARS + f" [… cut: the line had {(3 << 19) + 22} bytes]" and lines[5] == "tick 3"

    stopped = await client.post(f"/admin/runners/{runner.id}/stop", headers=bearer(admin_token))
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped", stopped.text
    audited = (await client.get("/admin/audit", params={"action": "runner.stopped"},
                                headers=bearer(admin_token))).json()["data"]
    # Only this runner's rows: on PostgreSQL, runners of earlier tests in the module (a restarting one among them)
    # may still be stopping when their database rows are truncated.
    mine = [(entry["subject"], entry["target_id"]) for entry in audited if entry["target_id"] == runner.id]
    assert mine == [("printer", runner.id)]
