"""One API and one UI process for the whole UI test session (each test makes its own accounts and data), and a
fresh browser context per test so logins never leak between tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.access import admin_token_of
from tests.support.live import start_server, wait_ready
from tests.ui.stack import CHROMIUM, CHROMIUM_ARGS, UiStack, server_env, start_ui

ADMIN_PASSWORD = "ui-admin-password-1"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, chat_model_dir: Path) -> Iterator[UiStack]:
    folder = tmp_path_factory.mktemp("ui-stack")
    database = folder / "llmws.db"
    shutil.copyfile(sqlite_template, database)
    models = folder / "models"  # a model folder of the stack's own, so a download test can add to it
    shutil.copytree(chat_model_dir, models / chat_model_dir.name)
    env = server_env(folder, f"sqlite:///{database}", str(models), ADMIN_PASSWORD)
    api = start_server(folder, env, "api")
    ui = None
    try:
        wait_ready(api)
        token = admin_token_of(api.base_url, ADMIN_PASSWORD)
        ui = start_ui(folder, env, api.base_url)
        yield UiStack(api, ui, token, folder)
    finally:
        if ui is not None:
            ui.stop()
        api.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    yield page
    context.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests last: once the session's Playwright has started, its event loop stays marked as running in this
    thread, and an ``async def`` test after it could not start its own."""
    items.sort(key=lambda item: "browser" in getattr(item, "fixturenames", ()))
