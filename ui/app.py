"""`panel serve` entry point. For now a status page; the chat and admin screens arrive with the UI issue."""

from __future__ import annotations

import panel as pn

from api.settings import load_settings
from ui.client import ApiClient


def status_page() -> pn.viewable.Viewable:
    settings = load_settings()
    report = ApiClient(settings.api_url).readiness()
    checks = report.get("checks", {})
    lines = [f"- **{name}**: {'ok' if check.get('ok') else 'failing'}" for name, check in checks.items()]
    return pn.Column(
        "# LLMWS",
        f"API at `{settings.api_url}`: **{report.get('status', 'unknown')}**",
        pn.pane.Markdown("\n".join(lines) or "no checks reported"),
    )


pn.extension()
status_page().servable(title="LLMWS")
