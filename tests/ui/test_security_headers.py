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
    policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    # A chat answer's Markdown image is fetched from this server or a data: URL, never from a host it names.
    assert policy["img-src"] == "'self' data: blob:", where
    assert policy["default-src"] == "'self'" and policy["connect-src"] == "'self'", where


def form_token(page: httpx.Response) -> str:
    found = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def test_login_and_logout_refuse_a_form_without_this_browsers_token(stack: UiStack) -> None:
    """Login CSRF (another site logs the browser into the attacker's account, to read what the victim types)
    and cross-site logout: both forms must carry the token of the browser's own CSRF cookie."""
    username = stack.new_user("csrf")
    with httpx.Client(base_url=stack.ui.base_url, timeout=30) as ui:
        forged = ui.post("/login", data={"username": username, "password": PASSWORD})
        assert forged.status_code == 403 and "llmws_token" not in ui.cookies
        assert "expired or came from another site" in forged.text
        token = form_token(ui.get("/login"))
        logged_in = ui.post("/login", data={"username": username, "password": PASSWORD, "_xsrf": token})
        assert logged_in.status_code in (302, 303) and "error" not in logged_in.headers["location"]

        assert ui.get("/logout").status_code == 200  # a link or an <img> only shows the button
        forged_logout = ui.post("/logout", data={"_xsrf": "2|00000000|" + "0" * 32 + "|0"})
        assert forged_logout.status_code == 403
        assert ui.get("/chat").status_code == 200  # still logged in
        logged_out = ui.post("/logout", data={"_xsrf": token})
        assert logged_out.status_code in (302, 303) and "logged" in logged_out.headers["location"]
        assert ui.get("/chat").status_code in (302, 303)


def test_login_page_and_app_pages_forbid_framing_and_sniffing(stack: UiStack) -> None:
    username = stack.new_user("headers")
    with httpx.Client(base_url=stack.ui.base_url, timeout=30) as ui:
        login_page = ui.get("/login")
        assert login_page.status_code == 200 and "password" in login_page.text
        to_login = ui.get("/chat")  # not logged in yet: sent to the login page
        assert to_login.status_code in (302, 303), to_login.text
        logged_in = ui.post("/login", data={"username": username, "password": PASSWORD,
                                            "_xsrf": form_token(login_page)})
        assert logged_in.status_code in (302, 303) and "error" not in logged_in.headers["location"]
        page = ui.get("/chat")
        assert page.status_code == 200 and "<html" in page.text.lower(), page.text[:500]
        static = re.search(r'(?:src|href)="(?:\./|\.\./)*/?(static/[^"?]+)', page.text)
        assert static, re.findall(r'(?:src|href)="[^"]*"', page.text)
        script = ui.get("/" + static.group(1))
        assert script.status_code == 200
        for response in (login_page, to_login, logged_in, page, script):
            assert_security_headers(response)
