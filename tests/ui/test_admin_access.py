"""The admin console is for admins: a plain user neither sees it in the menu nor gets in by typing its address."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.ui.conftest import ADMIN_PASSWORD
from tests.ui.stack import UiStack, screenshot
from ui.shell import ADMIN_PAGES, USER_PAGES


def test_a_plain_user_sees_no_admin_menu_and_is_refused_every_admin_address(stack: UiStack, page: Page) -> None:
    stack.login(page, stack.new_user())
    nav = page.locator("#nav")
    for label, path in USER_PAGES:
        expect(nav.locator(f'a[href="{path}"]')).to_have_text(label)
    expect(nav.locator('a[href^="/admin"]')).to_have_count(0)
    for _label, path in ADMIN_PAGES:
        page.goto(f"{stack.ui.base_url}{path}")
        expect(page.locator("#forbidden")).to_have_text("Administrators only")
    screenshot(page, "admin-refused")


@pytest.mark.parametrize("path", [path for _label, path in ADMIN_PAGES])
def test_an_admin_reaches_each_admin_page_from_the_menu(stack: UiStack, page: Page, path: str) -> None:
    stack.login(page, "admin", ADMIN_PASSWORD)
    page.locator(f'#nav a[href="{path}"]').click()
    page.wait_for_url(f"**{path}")
    expect(page.locator("#current-user")).to_have_text("admin")
    expect(page.locator("#forbidden")).to_have_count(0)
