"""The admin dashboard: accounts, today's traffic and latency as figure cards, and requests per hour."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import panel as pn
import param

from ui.client import ApiClient, ApiError
from ui.shell import UiSession, notice
from ui.views.admin_charts import hourly_requests_figure, number_card
from ui.views.token_sources import count_sources_line, count_sources_since


class OverviewState(param.Parameterized):
    """The figures of ``GET /admin/overview`` and where today's token counts came from."""

    hours = param.Integer(default=24, bounds=(1, 720))
    report = param.Dict(default={})
    sources = param.Dict(default={}, doc="Today's requests per count_source (engine, upstream, estimated).")

    def __init__(self, client: ApiClient, **params: Any) -> None:
        super().__init__(**params)
        self.client = client

    def refresh(self) -> None:
        report = self.client.overview(hours=self.hours)
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.sources = count_sources_since(self.client, today)
        self.report = report

    @property
    def users(self) -> dict[str, int]:
        return self.report.get("users", {})

    @property
    def today(self) -> dict[str, Any]:
        return self.report.get("today", {})

    def series(self) -> tuple[list[datetime], list[int], list[int]]:
        points = self.report.get("series", [])
        hours = [datetime.fromisoformat(point["hour"]).replace(tzinfo=None) for point in points]  # Bokeh: naive UTC
        return hours, [point["requests"] for point in points], [point["errors"] for point in points]


def overview_view(session: UiSession) -> pn.viewable.Viewable:
    state = OverviewState(session.client)
    body = pn.Column(sizing_mode="stretch_width")

    def render(_event: object = None) -> None:
        try:
            state.refresh()
        except ApiError as exc:
            body[:] = [notice(f"The overview could not be loaded: {exc.message}")]
            return
        body[:] = _dashboard(state)

    refresh = pn.widgets.Button(name="Refresh", icon="refresh", button_type="primary", width=110)
    refresh.on_click(render)
    render()
    return pn.Column(refresh, body, sizing_mode="stretch_width")


def _dashboard(state: OverviewState) -> list[pn.viewable.Viewable]:
    users, today = state.users, state.today
    error_rate = today.get("error_rate")
    accounts = pn.FlexBox(
        number_card("Users", users.get("total"), handle="users-total"),
        number_card("Active users", users.get("active"), handle="users-active"),
        number_card("Admins", users.get("admins"), handle="users-admins"))
    traffic = pn.FlexBox(
        number_card("Requests today", today.get("requests"), handle="requests-today"),
        number_card("Tokens today", today.get("total_tokens"), handle="tokens-today"),
        number_card("Error rate", None if error_rate is None else error_rate * 100, "{value:.1f}%",
                    handle="error-rate", colors=[(1, "#1e8449"), (5, "#b9770e"), (100, "#c0392b")]),
        duration_card("Latency p50", today.get("latency_p50_ms"), "latency-p50"),
        duration_card("Latency p95", today.get("latency_p95_ms"), "latency-p95"),
        duration_card("Time to first token p50", today.get("ttft_p50_ms"), "ttft-p50"))
    tokens = (f"{today.get('prompt_tokens', 0):,} prompt and {today.get('completion_tokens', 0):,} "
              f"completion tokens. {count_sources_line(state.sources)}")
    return [
        pn.pane.Markdown("### Accounts", margin=(0, 10)), accounts,
        pn.pane.Markdown("### Today (UTC)", margin=(0, 10)), traffic,
        pn.pane.Markdown(tokens, css_classes=["llmws-token-sources"], margin=(0, 10)),
        pn.pane.Bokeh(hourly_requests_figure(*state.series()), sizing_mode="stretch_width"),
    ]


def duration_card(label: str, milliseconds: float | None, handle: str) -> pn.indicators.Number:
    """Milliseconds up to 10 s, seconds beyond: "19.8 s" fits a card where "19,848 ms" wraps."""
    if milliseconds is not None and milliseconds >= 10_000:
        return number_card(label, milliseconds / 1000, "{value:,.1f} s", handle=handle)
    return number_card(label, milliseconds, "{value:,.0f} ms", handle=handle)

