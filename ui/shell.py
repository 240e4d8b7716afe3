"""What every page shares: the logged-in session, the frame with its menu, and the admin gate.

Each page is a script in ``ui/pages/`` that calls ``serve_page`` with a function building its body, so every
browser session gets its own state (Panel runs the script once per session).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import panel as pn

from api.settings import load_settings
from ui.auth import LOGIN_PATH, LOGOUT_PATH, XSRF_COOKIE, session_token
from ui.client import ApiClient, ApiError

USER_PAGES = [("Chat", "/chat"), ("History", "/history"), ("Projects", "/projects"), ("Settings", "/settings")]
ADMIN_PAGES = [("Overview", "/admin_overview"), ("Providers", "/admin_providers"), ("Models", "/admin_models"),
               ("Users", "/admin_users"), ("Prompts", "/admin_prompts"), ("Usage", "/admin_usage"),
               ("Runners", "/admin_runners"), ("Resources", "/admin_resources")]
EXTENSIONS = ("tabulator",)


@dataclass
class UiSession:
    """One browser session: its API client (with that user's token) and who the user is."""

    client: ApiClient
    user: dict[str, Any]

    @property
    def is_admin(self) -> bool:
        return self.user.get("role") == "admin"


def open_session() -> UiSession | None:
    """The session of the browser this page runs for, or None when its API login has ended."""
    token = session_token()
    if not token:
        return None
    client = ApiClient(load_settings().api_url, token)
    try:
        user = client.me()
    except ApiError:
        client.close()
        return None
    pn.state.on_session_destroyed(lambda _context: client.close())
    return UiSession(client, user)


NAV_CSS = """
.llmws-nav { display: flex; flex-direction: column; gap: 2px; }
.llmws-nav a { padding: 6px 10px; border-radius: 4px; text-decoration: none; color: inherit; }
.llmws-nav a.active { background: rgba(0, 114, 181, .12); font-weight: 600; }
.llmws-nav .nav-group { margin: 12px 0 4px; font-size: .8em; text-transform: uppercase; opacity: .6; }
"""


def notice(message: str, kind: str = "danger") -> pn.pane.Alert:
    return pn.pane.Alert(message, alert_type=kind)


def serve_page(title: str, path: str, build: Callable[[UiSession], pn.viewable.Viewable], *,
               admin: bool = False) -> None:
    """Build the page for this browser session and mark it servable inside the common frame."""
    pn.extension(*EXTENSIONS, notifications=True)
    session = open_session()
    template = pn.template.FastListTemplate(title=f"LLMWS · {title}", header_background="#0b3d5c",
                                            accent_base_color="#0072b5", sidebar_width=220)
    if session is None:
        template.main.append(pn.pane.HTML(
            f'<p id="session-ended">Your login has ended. <a href="{LOGIN_PATH}">Log in again</a>.</p>'))
        template.servable()
        return
    template.sidebar.append(pn.pane.HTML(_menu(session, path), sizing_mode="stretch_width"))
    template.header.append(pn.pane.HTML(
        f'<span class="llmws-user" id="current-user">{_escape(session.user["username"])}</span>'
        f' · {_logout_form()}',
        styles={"color": "white", "margin-left": "auto"}))
    if admin and not session.is_admin:
        template.main.append(pn.pane.HTML(
            '<h2 id="forbidden">Administrators only</h2><p>This page belongs to the admin console; your account '
            'is not an administrator.</p>'))
    else:
        try:
            body = build(session)
        except ApiError as exc:
            body = notice(f"The API refused: {exc.message}")
        template.main.append(pn.Column(f"## {title}", body, sizing_mode="stretch_width"))
    template.servable()


def _escape(text: str) -> str:
    return html.escape(text)


def _logout_form() -> str:
    """Log out is a form posting this browser's CSRF token (set by the login page); without the cookie the
    logout page asks again with a fresh one."""
    token = _escape(pn.state.cookies.get(XSRF_COOKIE, ""))
    return (f'<form method="post" action="{LOGOUT_PATH}" style="display: inline; margin: 0">'
            f'<input type="hidden" name="_xsrf" value="{token}">'
            '<button type="submit" id="logout" style="color: white; background: none; border: 0; padding: 0; '
            'font: inherit; text-decoration: underline; cursor: pointer">Log out</button></form>')


def _menu(session: UiSession, current: str) -> str:
    def links(pages: list[tuple[str, str]]) -> str:
        return "".join(f'<a href="{path}" class="nav-link{" active" if path == current else ""}" '
                       f'id="nav-{path.strip("/")}">{label}</a>' for label, path in pages)

    admin = f'<div class="nav-group">Admin</div>{links(ADMIN_PAGES)}' if session.is_admin else ""
    return f'<style>{NAV_CSS}</style><nav id="nav" class="llmws-nav">{links(USER_PAGES)}{admin}</nav>'
