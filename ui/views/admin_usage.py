"""Usage for admins: the last 30 days by day, model and user as charts, the raw rows filtered and paged, and a
CSV export. Every token figure says whether the engine counted it, an upstream reported it, or it is estimated."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import panel as pn

from ui.client import ApiError
from ui.shell import UiSession
from ui.views.admin_charts import bar_figure
from ui.views.admin_usage_state import CSV_GROUPS, REPORT_GROUPS, ROW_COLUMNS, STATUSES, UsageState
from ui.views.token_sources import COUNT_SOURCES, count_sources_line

MEASURES = {"Tokens": "total_tokens", "Requests": "requests"}
TITLES = {"day": "by day (UTC)", "model": "by model", "user": "by user"}
TABLE_TITLES = {"created_at": "time (UTC)", "username": "user", "prompt_tokens": "prompt tokens",
                "completion_tokens": "completion tokens", "token_count": "token figures", "latency_ms": "latency ms",
                "ttft_ms": "first token ms", "tokens_per_s": "tokens/s", "request_id": "request"}
ANY = {"any": ""}


def usage_view(session: UiSession) -> pn.viewable.Viewable:
    state = UsageState(session.client)
    message = pn.pane.Alert("", alert_type="danger", visible=False)

    def guarded(action: Any) -> bool:
        try:
            action()
        except ApiError as exc:
            message.object, message.visible = exc.message, True
            return False
        message.visible = False
        return True

    if not guarded(lambda: (state.load_reports(), state.load_rows())):
        return message
    return pn.Column(message, _charts(state), _rows(state, guarded), sizing_mode="stretch_width")


def _charts(state: UsageState) -> pn.viewable.Viewable:
    measure = pn.widgets.RadioButtonGroup(name="Measure", options=list(MEASURES), value="Tokens")
    panes = pn.GridBox(ncols=len(REPORT_GROUPS), sizing_mode="stretch_width")
    caption = pn.pane.Markdown("", css_classes=["llmws-usage-sources"])

    def show(_event: object = None) -> None:
        label = measure.value.lower()
        panes[:] = [pn.pane.Bokeh(bar_figure(f"{measure.value} {TITLES[group]}",
                                             *state.chart(group, MEASURES[measure.value]), label),
                                  sizing_mode="stretch_width") for group in REPORT_GROUPS]
        caption.object = (f"{count_sources_line(state.report_sources, 'Behind these charts')} The charts add "
                          "them all up; the table below says for each request where its figures come from.")

    measure.param.watch(show, "value")
    state.param.watch(show, ["reports"])
    show()
    return pn.Column(pn.Row(pn.pane.Markdown("### Last 30 days"), measure), panes, caption,
                     sizing_mode="stretch_width")


def _rows(state: UsageState, guarded: Any) -> pn.viewable.Viewable:
    users = pn.widgets.Select(name="User", options=state.user_options(), value="", width=200,
                              css_classes=["llmws-filter-user"])
    model = pn.widgets.Select(name="Model", options=ANY | {name: name for name in state.model_options() if name},
                              value="", width=220,
                              css_classes=["llmws-filter-model"])
    status = pn.widgets.Select(name="Status", options=ANY | {name: name for name in STATUSES}, value="", width=130,
                               css_classes=["llmws-filter-status"])
    source = pn.widgets.Select(name="Token figures", options=ANY | {label: key for key, label in
                                                                            COUNT_SOURCES.items()},
                               value="", width=220, css_classes=["llmws-filter-source"])
    table = pn.widgets.Tabulator(pd.DataFrame(columns=ROW_COLUMNS), disabled=True, show_index=False,
                                 sizing_mode="stretch_width", css_classes=["llmws-usage-table"], titles=TABLE_TITLES)
    previous = pn.widgets.Button(name="Previous", width=100)
    following = pn.widgets.Button(name="Next", width=100)
    page_label = pn.pane.Markdown("", css_classes=["llmws-usage-page"])
    sources = pn.pane.Markdown("", css_classes=["llmws-row-sources"])
    group_by = pn.widgets.Select(name="CSV rows by", options=CSV_GROUPS, value=state.csv_group_by, width=140)
    download = pn.widgets.FileDownload(callback=lambda: io.StringIO(state.csv()), filename=state.csv_filename,
                                       label="Download CSV", button_type="primary", width=180,
                                       css_classes=["llmws-usage-csv"])

    def show(_event: object = None) -> None:
        table.value = pd.DataFrame(state.table_rows(), columns=ROW_COLUMNS)
        last = state.offset + len(state.rows)
        page_label.object = f"Rows {state.offset + 1 if state.rows else 0}–{last} of {state.total}"
        previous.disabled, following.disabled = state.offset == 0, last >= state.total
        sources.object = count_sources_line(state.sources, "Token figures of the matching rows")

    def refilter(_event: object) -> None:
        guarded(lambda: state.apply_filters(user_id=users.value, model=model.value, status=status.value,
                                            count_source=source.value))
        show()

    def on_group(event: Any) -> None:
        state.csv_group_by = event.new
        download.filename = state.csv_filename

    for widget in (users, model, status, source):
        widget.param.watch(refilter, "value")
    group_by.param.watch(on_group, "value")
    previous.on_click(lambda _event: (guarded(state.previous_page), show()))
    following.on_click(lambda _event: (guarded(state.next_page), show()))
    show()
    return pn.Column(pn.pane.Markdown("### Requests"), pn.Row(users, model, status, source), table,
                     pn.Row(previous, following, page_label), sources, pn.pane.Markdown("### Export"),
                     pn.Row(group_by, download), pn.pane.Markdown(
                         "The CSV holds the last 30 days' totals per group, for the user chosen above (or everyone).",
                         styles={"opacity": ".7"}), sizing_mode="stretch_width")
