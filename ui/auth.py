"""The ``panel serve --auth-module`` for LLMWS: users log in with their API account.

The password is checked by ``POST /auth/login``; the API's session token is then kept in a signed, HttpOnly cookie
(``llmws_token``) beside Panel's own ``user`` cookie, so the browser's JavaScript never sees it and a reload keeps
the login. The login and logout forms carry tornado's CSRF token (``_xsrf``), so no other site can post them.
Logging out ends the API session too. Registration goes through ``POST /auth/register`` and is refused
there when the API's registration is closed.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import jinja2
import panel as pn
from panel.auth import BasicLoginHandler
from panel.auth import LogoutHandler as PanelLogoutHandler
from tornado.web import HTTPError, RequestHandler

from api.settings import load_settings

TOKEN_COOKIE = "llmws_token"  # noqa: S105 (a cookie's name)
USER_COOKIE = "user"  # Panel's own: what pn.state.user reads
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
XSRF_COOKIE = "_xsrf"  # tornado's: the CSRF token the login and logout forms must echo

_TEMPLATE = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True
).get_template("login.html")


def api_url() -> str:
    return load_settings().api_url.rstrip("/")


def _forwarded_for(handler: RequestHandler) -> dict[str, str]:
    """The browser's address for the API's login throttle and audit log, which would otherwise see every UI user
    as the UI server. uvicorn takes X-Forwarded-For from a loopback peer (its FORWARDED_ALLOW_IPS default); an API
    elsewhere must list the UI's address there."""
    return {"X-Forwarded-For": handler.request.remote_ip} if handler.request.remote_ip else {}


def _api_message(response: httpx.Response, fallback: str) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return fallback


class LoginHandler(BasicLoginHandler):
    """Serves the login/register page and checks the form against the API."""

    def get(self) -> None:
        next_url = safe_next(self.get_argument("next", ""))
        if next_url:
            self.set_cookie("next_url", next_url, httponly=True, samesite="Lax", path="/")
        render_form(self, error=self.get_argument("error", ""), notice=self.get_argument("notice", ""),
                    mode=self.get_argument("mode", "login"))

    async def post(self) -> None:
        if not same_site_form(self):
            # Login CSRF: another site's form would log the browser into the attacker's account.
            return render_form(self, status=403, mode=self.get_argument("action", "login"), error=EXPIRED_FORM)
        username = self.get_argument("username", "").strip()
        password = self.get_argument("password", "")
        registering = self.get_argument("action", "login") == "register"
        try:
            async with httpx.AsyncClient(base_url=api_url(), timeout=15.0, headers=_forwarded_for(self)) as http:
                if registering:
                    email = self.get_argument("email", "").strip() or None
                    body = {"username": username, "password": password} | ({"email": email} if email else {})
                    created = await http.post("/auth/register", json=body)
                    if created.is_error:
                        return self._back(_api_message(created, "registration failed"), "register")
                login = await http.post("/auth/login", json={"username": username, "password": password})
        except httpx.TransportError:
            return self._back("The LLMWS API cannot be reached. Try again in a moment.")
        if login.status_code in (401, 422):
            return self._back("Wrong username or password.")
        if login.is_error:
            return self._back(_api_message(login, "login failed"))
        token = login.json()
        expires = datetime.fromisoformat(token["expires_at"])
        # Secure whenever the browser came over https (directly, or through a proxy that says so).
        https = self.request.protocol == "https" or self.request.headers.get("X-Forwarded-Proto") == "https"
        for name, value in ((TOKEN_COOKIE, token["access_token"]), (USER_COOKIE, token["user"]["username"])):
            self.set_secure_cookie(name, value, expires_days=None, expires=expires, httponly=True, samesite="Lax",
                                   path="/", secure=https)
        self.clear_cookie("is_guest")
        next_url = safe_next(self.get_cookie("next_url", "")) or "/"
        self.clear_cookie("next_url", path="/")
        self.redirect(next_url)

    def _back(self, message: str, mode: str = "login") -> None:
        self.redirect(f"{LOGIN_PATH}?mode={mode}&error={quote(message)}")


class LogoutHandler(PanelLogoutHandler):
    """Ends the API session as well as the browser's cookies, on a POST carrying the CSRF token only: another
    site's link or image must not log anyone out. A GET shows the button that posts it."""

    def get(self) -> None:
        render_form(self, mode="logout")

    async def post(self) -> None:
        if not same_site_form(self):
            return render_form(self, status=403, mode="logout", error=EXPIRED_FORM)
        token = self.get_secure_cookie(TOKEN_COOKIE)
        if token:
            try:
                async with httpx.AsyncClient(base_url=api_url(), timeout=10.0, headers=_forwarded_for(self)) as http:
                    await http.post("/auth/logout", headers={"Authorization": f"Bearer {token.decode()}"})
            except httpx.TransportError:
                pass  # the cookies go anyway; the API session then just expires on its own
        for name in (TOKEN_COOKIE, USER_COOKIE, "id_token", "access_token", "is_guest"):
            self.clear_cookie(name, path="/")
        self.redirect(f"{LOGIN_PATH}?notice={quote('You are logged out.')}")


EXPIRED_FORM = "This form has expired or came from another site. Please try again."


def render_form(handler: RequestHandler, *, mode: str, status: int = 200, error: str = "", notice: str = "") -> None:
    """The login, registration or logout page, its form carrying this browser's CSRF token."""
    handler.set_status(status)
    handler.write(_TEMPLATE.render(error=error, notice=notice, mode=mode, login_path=LOGIN_PATH,
                                   logout_path=LOGOUT_PATH, xsrf_token=handler.xsrf_token.decode()))


def same_site_form(handler: RequestHandler) -> bool:
    """Whether a posted form carries the token of this browser's CSRF cookie (tornado's double submit, masked
    per page against BREACH); another site can neither read the cookie nor guess the token."""
    try:
        handler.check_xsrf_cookie()
    except HTTPError:
        return False
    return True


def safe_next(url: str) -> str | None:
    """A path on this server to go back to after login, or None: never another site (``//host``, ``/\\host``,
    which browsers read as ``//host``, or anything with a scheme or a host)."""
    parts = urlsplit(url)
    # (Browsers drop tabs and newlines inside a URL, so "/\t/host" is "//host" too.)
    if (not url.startswith("/") or url.startswith("//") or "\\" in url or parts.scheme or parts.netloc
            or any(ord(char) <= 0x20 for char in url)):
        return None
    return url


def get_user(request_handler: RequestHandler) -> str | None:
    """The logged-in username, from cookies this server signed; None sends the browser to the login page."""
    if not request_handler.get_secure_cookie(TOKEN_COOKIE):
        return None
    user = request_handler.get_secure_cookie(USER_COOKIE)
    return user.decode() if user else None


def session_token() -> str | None:
    """The API token of the browser session a Panel callback runs for."""
    from tornado.web import decode_signed_value

    raw = pn.state.cookies.get(TOKEN_COOKIE)
    if not raw:
        return None
    value = decode_signed_value(pn.config.cookie_secret, TOKEN_COOKIE, raw)
    return value.decode() if value else None


# What Bokeh's AuthModule reads from this file (``LoginHandler`` and ``LogoutHandler`` are the classes above).
login_url = LOGIN_PATH
logout_url = LOGOUT_PATH
