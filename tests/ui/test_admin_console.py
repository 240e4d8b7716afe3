"""The admin console in a real browser, logged in as the admin, showing and changing data each test made itself."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.ui.admin_traffic import UserTraffic, login_status, user_with_usage
from tests.ui.conftest import ADMIN_PASSWORD
from tests.ui.stack import PASSWORD, UiStack, screenshot


@pytest.fixture(scope="module")
def traffic(stack: UiStack) -> UserTraffic:
    return user_with_usage(stack, requests=3, prefix="console")


def as_admin(stack: UiStack, page: Page, path: str) -> None:
    stack.login(page, "admin", ADMIN_PASSWORD, then=path)


def text_of(pane: Locator) -> str:
    """A Panel pane's text, which lives in its shadow root (``inner_text`` of the host alone is empty)."""
    return pane.locator("div").first.inner_text()


def figure_of(card: Locator) -> int:
    """The number a figure card shows (its last run of digits and thousands separators)."""
    expect(card).to_contain_text(re.compile(r"\d"))
    return int(re.findall(r"\d[\d,]*", text_of(card))[-1].replace(",", ""))


def sample_count(text: str) -> int:
    return int(re.match(r"(\d+) samples", text).group(1))


def test_the_overview_counts_todays_requests_and_charts_them(stack: UiStack, page: Page,
                                                             traffic: UserTraffic) -> None:
    as_admin(stack, page, "/admin_overview")
    assert figure_of(page.locator(".llmws-requests-today")) >= traffic.requests
    assert figure_of(page.locator(".llmws-users-total")) >= 2
    expect(page.locator(".llmws-token-sources")).to_contain_text("counted by the local engine")
    expect(page.locator(".llmws-latency-p95")).to_contain_text("ms")
    expect(page.locator("canvas").first).to_be_visible()  # the requests-per-hour chart
    screenshot(page, "admin-overview")


def test_the_users_page_lists_a_user_and_disabling_them_stops_their_login(stack: UiStack, page: Page) -> None:
    username = stack.new_user("disable-me")
    assert login_status(stack, username, PASSWORD) == 200
    as_admin(stack, page, "/admin_users")
    row = page.locator(".llmws-users-table .tabulator-row", has_text=username)
    following = page.get_by_role("button", name="Next")
    expect(page.locator(".llmws-users-table .tabulator-row").first).to_be_visible()
    while not row.is_visible():  # accounts are listed oldest first, a page at a time
        assert following.is_enabled(), f"{username} is on no page"
        shown = text_of(page.locator(".llmws-users-page"))
        following.click()
        expect(page.locator(".llmws-users-page")).not_to_have_text(shown)
    row.click()
    expect(page.locator(".llmws-selected-user")).to_contain_text(username)
    page.get_by_role("button", name="Disable user").click()
    expect(page.get_by_text(f"{username} is now disabled")).to_be_visible()
    assert login_status(stack, username, PASSWORD) in (401, 403)
    expect(page.locator(".llmws-selected-user")).to_contain_text("disabled")
    screenshot(page, "admin-users")


def test_a_prompt_created_in_the_library_is_served_by_the_api(stack: UiStack, page: Page) -> None:
    name = f"summariser-{uuid.uuid4().hex[:6]}"
    as_admin(stack, page, "/admin_prompts")
    page.locator(".llmws-prompt-name input").fill(name)
    page.locator(".llmws-prompt-content textarea").fill("You summarise in one sentence.")
    page.locator(".llmws-prompt-template textarea").fill("Summarise: {input}")
    page.locator(".llmws-prompt-visibility").get_by_role("button", name="Shared").click()
    page.get_by_role("button", name="Create prompt").click()
    expect(page.get_by_text(f"Created “{name}”")).to_be_visible()
    prompts = stack.api_get("/v1/prompts", stack.admin_token, limit=200)["data"]
    stored = next(prompt for prompt in prompts if prompt["name"] == name)
    assert stored["content"] == "You summarise in one sentence."
    assert (stored["user_template"], stored["is_shared"]) == ("Summarise: {input}", True)
    expect(page.get_by_role("button", name="Save changes")).to_be_visible()  # it is now open for editing
    screenshot(page, "admin-prompts")


def test_usage_filtered_by_user_shows_their_rows_and_exports_csv(stack: UiStack, page: Page,
                                                                 traffic: UserTraffic) -> None:
    as_admin(stack, page, "/admin_usage")
    page.locator(".llmws-filter-user select").select_option(label=traffic.username)
    expect(page.locator(".llmws-usage-page")).to_contain_text(f"of {traffic.requests}")
    rows = page.locator(".llmws-usage-table .tabulator-row")
    expect(rows).to_have_count(traffic.requests)
    for index in range(traffic.requests):
        expect(rows.nth(index)).to_contain_text(traffic.username)
        expect(rows.nth(index)).to_contain_text("counted by the local engine")
    expect(page.locator(".llmws-row-sources")).to_contain_text(f"{traffic.requests} requests counted by")

    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    assert download.value.suggested_filename == "usage-by-model.csv"
    csv_text = Path(download.value.path()).read_text()
    assert csv_text.startswith("model,") and traffic.model in csv_text
    screenshot(page, "admin-usage")


def test_resources_show_the_model_its_context_and_live_charts(stack: UiStack, page: Page) -> None:
    report = stack.api_get("/admin/resources", stack.admin_token)
    as_admin(stack, page, "/admin_resources")
    expect(page.locator(".llmws-model-name")).to_have_text(report["model"]["name"])
    assert figure_of(page.locator(".llmws-max-context")) == report["model"]["max_context"]
    if not report["gpus"]:
        expect(page.locator(".llmws-no-gpu")).to_contain_text("No GPU")
    samples = page.locator(".llmws-samples")
    expect(samples).to_contain_text("samples")
    first = text_of(samples)
    expect(samples).not_to_have_text(first, timeout=10_000)  # a new point every two seconds
    assert sample_count(text_of(samples)) > sample_count(first)
    screenshot(page, "admin-resources")
