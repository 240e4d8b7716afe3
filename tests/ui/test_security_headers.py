"""The UI's HTTP answers (login page, redirects, app pages, static files) carry the security headers: no MIME
sniffing, never framed by another site. Against a real `llmws ui`, without a browser."""

from __future__ import annotations

import re

import httpx

from tests.ui.stack import PASSWORD, UiStack


def assert_security_headers(response: httpx.Response) -> None:
    where = (str(response.request.url), response.status_code)
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert response.headers.get("x-frame-options") == "DENY", where
    assert "frame-ancestors 'none'" in response.headers.get("content-security-policy", ""), where
    assert response.headers.get("referrer-policy") == "same-origin", where


def test_login_page_and_app_pages_forbid_framing_and_sniffing(stack: UiStack) -> None:
    username = stack.new_user("headers")
    with httpx.Client(base_url=stack.ui.base_url, timeout=30) as ui:
        login_page = ui.get("/login")
        assert login_page.status_code == 200 and "password" in login_page.text
        to_login = ui.get("/chat")  # not logged in yet: sent to the login page
        assert to_login.status_code in (302, 303), to_login.text
        logged_in = ui.post("/login", data={"username": username, "password": PASSWORD})
        assert logged_in.status_code in (302, 303) and "error" not in logged_in.headers["location"]
        page = ui.get("/chat")
        assert page.status_code == 200 and "<html" in page.text.lower(), page.text[:500]
        static = re.search(r'(?:src|href)="(?:\./|\.\./)*/?(static/[^"?]+)', page.text)
        assert static, re.findall(r'(?:src|href)="[^"]*"', page.text)
        script = ui.get("/" + static.group(1))
        assert script.status_code == 200
        for response in (login_page, to_login, logged_in, page, script):
            assert_security_headers(response)
