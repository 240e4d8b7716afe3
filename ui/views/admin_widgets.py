"""What the admin console's pages build the same way: read-only tables of rows, and actions whose API refusal is
shown to the admin instead of lost in the server log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import panel as pn

from ui.client import ApiError


def rows_frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


def table(rows: list[dict[str, Any]], columns: list[str], css: str, **params: Any) -> pn.widgets.Tabulator:
    """A read-only table; clicking a row selects it (one at a time)."""
    return pn.widgets.Tabulator(rows_frame(rows, columns), show_index=False, disabled=True, selectable=1,
                                layout="fit_data_stretch", sizing_mode="stretch_width", css_classes=[css],
                                **params)


def selected_value(tabulator: pn.widgets.Tabulator, column: str) -> Any:
    """The ``column`` of the selected row, or None."""
    if not tabulator.selection or tabulator.value.empty:
        return None
    index = tabulator.selection[0]
    if index >= len(tabulator.value):
        return None
    value = tabulator.value.iloc[index][column]
    return value.item() if hasattr(value, "item") else value


def chosen(tabulator: pn.widgets.Tabulator, column: str, what: str) -> Any:
    """The selected row's ``column``; an action with no row selected is refused with a message saying so."""
    value = selected_value(tabulator, column)
    if value is None:
        raise ApiError(400, f"select {what} in the table first", "invalid_value")
    return value


def refill(tabulator: pn.widgets.Tabulator, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """New rows, keeping the selection on the same row when it still exists (rows are keyed by ``columns[0]``)."""
    key = selected_value(tabulator, columns[0])
    frame = rows_frame(rows, columns)
    keys = list(frame[columns[0]]) if not frame.empty else []
    tabulator.param.update(value=frame, selection=[keys.index(key)] if key in keys else [])


class Feedback:
    """One line under a page's title: what the last action did, or why the API refused it."""

    def __init__(self) -> None:
        self.pane = pn.pane.Alert("", alert_type="light", visible=False, css_classes=["llmws-feedback"],
                                  sizing_mode="stretch_width")

    def ok(self, message: str) -> None:
        self.pane.param.update(object=message, alert_type="success", visible=True)

    def error(self, message: str) -> None:
        self.pane.param.update(object=message, alert_type="danger", visible=True)
        if pn.state.notifications is not None:
            pn.state.notifications.error(message, duration=6000)

    def run(self, action: Callable[[], str | None]) -> bool:
        """Run an action; its returned text is shown as done, an ``ApiError`` as refused."""
        try:
            message = action()
        except ApiError as exc:
            self.error(exc.message)
            return False
        if message:
            self.ok(message)
        return True

    def button(self, label: str, action: Callable[[], str | None], *, kind: str = "default",
               css: str | None = None) -> pn.widgets.Button:
        button = pn.widgets.Button(name=label, button_type=kind, css_classes=[css] if css else [])
        button.on_click(lambda _event: self.run(action))
        return button
