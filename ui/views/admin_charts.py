"""Bokeh figures and figure cards the admin pages share, so the console's charts look alike."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import panel as pn
from bokeh.models import ColumnDataSource, HoverTool, NumeralTickFormatter
from bokeh.plotting import figure

ACCENT = "#0072b5"
ERROR = "#c0392b"
CARD_STYLES = {"border": "1px solid rgba(0, 0, 0, .12)", "border-radius": "8px", "padding": "4px 14px",
               "background": "white"}


def number_card(label: str, value: float | None, fmt: str = "{value:,.0f}", handle: str = "",
                colors: list[tuple[float, str]] | None = None, width: int = 170) -> pn.indicators.Number:
    """One figure as a dashboard card; ``handle`` becomes a CSS class (``llmws-<handle>``) tests can find."""
    return pn.indicators.Number(name=label, value=value, format=fmt, nan_format="–", font_size="28pt",
                                title_size="11pt", default_color="#0b3d5c", colors=colors,
                                css_classes=[f"llmws-{handle}"] if handle else [], styles=CARD_STYLES,
                                margin=(6, 6), width=width)


def hourly_requests_figure(hours: Sequence[datetime], requests: Sequence[int], errors: Sequence[int]) -> figure:
    """Requests per hour as bars, the errors among them drawn over them in red."""
    source = ColumnDataSource({"hour": list(hours), "requests": list(requests), "errors": list(errors)})
    chart = figure(x_axis_type="datetime", height=280, sizing_mode="stretch_width", toolbar_location=None,
                   title="Requests per hour (UTC)")
    width = 3_600_000 * 0.8  # milliseconds: bars a little narrower than the hour they stand for
    chart.vbar(x="hour", top="requests", width=width, source=source, color=ACCENT, legend_label="requests")
    chart.vbar(x="hour", top="errors", width=width, source=source, color=ERROR, legend_label="errors")
    chart.add_tools(HoverTool(tooltips=[("hour", "@hour{%H:%M}"), ("requests", "@requests"),
                                        ("errors", "@errors")], formatters={"@hour": "datetime"}))
    chart.y_range.start = 0
    chart.yaxis.ticker.min_interval = 1  # counts: no tick between two whole numbers
    chart.yaxis.formatter = NumeralTickFormatter(format="0,0")
    chart.legend.location = "top_left"
    chart.xgrid.grid_line_color = None
    return chart


def bar_figure(title: str, groups: Sequence[str], values: Sequence[float], value_label: str) -> figure:
    """Horizontal-reading bars of one value per named group (days, models, users)."""
    names = [name or "(none)" for name in groups]
    source = ColumnDataSource({"group": names, "value": list(values)})
    chart = figure(x_range=names or ["(no usage yet)"], height=260, sizing_mode="stretch_width",
                   toolbar_location=None, title=title)
    chart.vbar(x="group", top="value", width=0.7, source=source, color=ACCENT)
    chart.add_tools(HoverTool(tooltips=[("", "@group"), (value_label, "@value{0,0}")]))
    chart.y_range.start = 0
    chart.yaxis.ticker.min_interval = 1
    chart.yaxis.axis_label = value_label
    chart.yaxis.formatter = NumeralTickFormatter(format="0,0")
    chart.xaxis.major_label_orientation = 0.6 if len(names) > 6 else 0
    chart.xgrid.grid_line_color = None
    return chart
