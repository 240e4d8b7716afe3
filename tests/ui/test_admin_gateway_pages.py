"""The providers, models and runners admin pages in a real browser, as the admin, on data each test makes: a
provider on a fake upstream, an alias, a model downloaded from a local git repository, a runner's command."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from playwright.sync_api import Locator, Page, expect

from bench.fake_openai import FakeUpstream
from tests.support.gateway import unique
from tests.support.git_host import git_repo
from tests.ui.conftest import ADMIN_PASSWORD
from tests.ui.stack import UiStack, screenshot

DOWNLOAD_TIMEOUT_MS = 120_000


def enter(page: Page, css: str, text: str) -> None:
    """Type into a Panel text input and leave it, which is when Panel sends the value."""
    field = page.locator(f"{css} input, {css} textarea").first
    field.fill(text)
    field.press("Tab")


def press(page: Page, css: str) -> None:
    page.locator(f"{css} button").click()


def row(page: Page, table_css: str, text: str) -> Locator:
    return page.locator(f"{table_css} .tabulator-row", has_text=text)


def eventually(check: Callable[[], bool], what: str, within_s: float = 15) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"not within {within_s} s: {what}"
        time.sleep(0.2)


def test_a_provider_made_in_the_page_is_tested_and_disabled(stack: UiStack, page: Page,
                                                            upstream: FakeUpstream) -> None:
    name = unique("prov")
    stack.login(page, "admin", ADMIN_PASSWORD, then="/admin_providers")
    enter(page, ".llmws-provider-name", name)
    enter(page, ".llmws-provider-url", upstream.base_url)
    press(page, ".llmws-provider-save")
    expect(page.locator(".llmws-feedback")).to_contain_text(f"{name} created")
    provider = next(p for p in stack.api_get("/admin/providers", stack.admin_token)["data"] if p["name"] == name)
    assert provider["base_url"] == upstream.base_url and provider["is_active"]

    row(page, ".llmws-providers-table", name).locator("[tabulator-field='name']").click()
    press(page, ".llmws-provider-test-button")
    result = page.locator(".llmws-provider-test")
    for model in ("fake-fast", "fake-quiet", "fake-slow"):
        expect(result).to_contain_text(model)
    expect(row(page, ".llmws-providers-table", name)).to_contain_text("healthy")

    press(page, ".llmws-provider-disable")
    expect(page.locator(".llmws-feedback")).to_contain_text(f"{name} is disabled")
    eventually(lambda: not stack.api_get(f"/admin/providers/{provider['id']}", stack.admin_token)["is_active"],
               "the API sees the provider disabled")
    screenshot(page, "admin-providers")


def test_the_models_page_lists_aliases_and_downloads_then_deletes_a_model(stack: UiStack, page: Page,
                                                                          upstream: FakeUpstream,
                                                                          tmp_path: Path) -> None:
    provider = httpx.post(f"{stack.api.base_url}/admin/providers", headers=stack.admin_headers,
                          json={"name": unique("prov"), "base_url": upstream.base_url, "timeout_s": 5}).json()
    alias = unique("alias")
    created = httpx.post(f"{stack.api.base_url}/admin/models", headers=stack.admin_headers, json={
        "name": alias, "description": "on the fake",
        "deployments": [{"provider_id": provider["id"], "upstream_model": "fake-fast"}]})
    assert created.status_code == 201, created.text
    source = git_repo(tmp_path / "repo", files_from=stack.folder / "models" / "tiny-chat")
    model = unique("dl")

    stack.login(page, "admin", ADMIN_PASSWORD, then="/admin_models")
    expect(row(page, ".llmws-catalog-table", alias)).to_contain_text(f"{provider['name']} fake-fast")
    expect(row(page, ".llmws-local-table", "tiny-chat")).to_be_visible()

    enter(page, ".llmws-download-source", source)
    enter(page, ".llmws-download-name", model)
    press(page, ".llmws-download-start")
    status = page.locator(".llmws-download-status")
    expect(status).to_contain_text("completed", timeout=DOWNLOAD_TIMEOUT_MS)
    expect(page.locator(".llmws-download-progress progress")).to_have_attribute("value", "100")
    expect(row(page, ".llmws-local-table", model)).to_be_visible()
    status.scroll_into_view_if_needed()  # the page scrolls inside the template: show the finished download
    screenshot(page, "admin-models")

    row(page, ".llmws-local-table", model).locator("[tabulator-field='name']").click()
    press(page, ".llmws-local-delete")
    expect(page.locator(".llmws-delete-question")).to_contain_text(f"Delete {model} from disk?")
    assert model in [m["name"] for m in stack.api_get("/admin/engine/models", stack.admin_token)["data"]]
    press(page, ".llmws-delete-confirm")
    expect(page.locator(".llmws-feedback")).to_contain_text(f"{model} deleted from disk")
    expect(row(page, ".llmws-local-table", model)).to_have_count(0)
    assert model not in [m["name"] for m in stack.api_get("/admin/engine/models", stack.admin_token)["data"]]


def test_the_runners_page_previews_the_exact_command(stack: UiStack, page: Page) -> None:
    port = 18000 + uuid.uuid4().int % 10_000
    expected = httpx.post(f"{stack.api.base_url}/admin/runners/preview", headers=stack.admin_headers,
                          json={"template": "llmws", "model": str(stack.folder / "models" / "tiny-chat"),
                                "port": port})
    assert expected.status_code == 200, expected.text

    stack.login(page, "admin", ADMIN_PASSWORD, then="/admin_runners")
    page.locator(".llmws-runner-template select").select_option(label="llmws")
    page.locator(".llmws-runner-model select").select_option(label="tiny-chat")
    enter(page, ".llmws-runner-port", str(port))
    press(page, ".llmws-runner-preview-button")
    expect(page.locator(".llmws-runner-command")).to_have_text(expected.json()["command"])
    screenshot(page, "admin-runners")
