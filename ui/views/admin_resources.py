"""The machine as the API sees it (``GET /admin/resources``): GPU, CPU and memory charts that update every two
seconds, and the loaded model with the context its memory budget allows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import panel as pn
import param
from bokeh.models import ColumnDataSource, DatetimeTickFormatter
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from ui.client import ApiClient, ApiError
from ui.shell import UiSession
from ui.views.admin_charts import number_card

POLL_MS = 2000
ROLLOVER = 300  # ten minutes of samples
GB = 1024**3


class ResourcesState(param.Parameterized):
    """The latest report and the samples the charts are made of."""

    report = param.Dict(default={})
    samples = param.Integer(default=0, doc="How many reports have been turned into chart points.")
    last_sample_at = param.Parameter(default=None)

    def __init__(self, client: ApiClient, **params: Any) -> None:
        super().__init__(**params)
        self.client = client

    def poll(self) -> dict[str, list[Any]]:
        """Read the resources once; the new chart point, one-element columns ready for ``ColumnDataSource.stream``."""
        self.report = self.client.resources()
        point = self.point(self.report, datetime.now(UTC))
        self.samples += 1
        self.last_sample_at = point["time"][0]
        return point

    @staticmethod
    def point(report: dict[str, Any], at: datetime) -> dict[str, list[Any]]:
        cpu = report["cpu"]
        point: dict[str, Any] = {"time": at.replace(tzinfo=None),  # Bokeh's datetime axis: naive UTC
                                 "cpu_percent": cpu["cpu_percent"],
                                 "ram_used_gb": cpu["memory_used_bytes"] / GB,
                                 "ram_percent": 100 * cpu["memory_used_bytes"] / cpu["memory_total_bytes"],
                                 "process_gb": cpu["process_rss_bytes"] / GB}
        for gpu in report.get("gpus", []):
            index = gpu["index"]
            point[f"gpu{index}_memory_gb"] = gpu["memory_used_bytes"] / GB
            point[f"gpu{index}_memory_percent"] = 100 * gpu["memory_used_bytes"] / gpu["memory_total_bytes"]
            utilization = gpu.get("utilization_percent")
            point[f"gpu{index}_utilization"] = float("nan") if utilization is None else utilization
        return {name: [value] for name, value in point.items()}

    @property
    def gpus(self) -> list[dict[str, Any]]:
        return self.report.get("gpus", [])

    @property
    def model(self) -> dict[str, Any] | None:
        return self.report.get("model")

    @property
    def engine(self) -> dict[str, Any] | None:
        return self.report.get("engine")


def _time_chart(title: str, source: ColumnDataSource, lines: list[tuple[str, str]], unit: str,
                percent: bool = False) -> figure:
    chart = figure(title=title, x_axis_type="datetime", height=240, sizing_mode="stretch_width",
                   toolbar_location=None)
    for (column, label), color in zip(lines, Category10_10, strict=False):
        chart.line(x="time", y=column, source=source, legend_label=label, line_width=2, color=color)
    clock = "%H:%M:%S"
    chart.xaxis.formatter = DatetimeTickFormatter(milliseconds=clock, seconds=clock, minsec=clock, minutes="%H:%M",
                                                  hourmin="%H:%M", hours="%H:%M", context=None)
    chart.xaxis.axis_label = "UTC"
    chart.y_range.start = 0
    if percent:
        chart.y_range.end = 100
    chart.yaxis.axis_label = unit
    chart.legend.location = "top_left"
    return chart


def _model_panel(state: ResourcesState) -> list[pn.viewable.Viewable]:
    model, engine = state.model, state.engine
    if model is None:
        return [pn.pane.Alert("No local model is loaded.", alert_type="info")]
    facts = (f"**Loaded model:** <span class='llmws-model-name'>{model['name']}</span>  \n"
             f"{model.get('architecture') or '?'} · {model.get('parameters') or 0:,} parameters · "
             f"{model.get('device')} · {model.get('dtype')} · the model itself allows "
             f"{model.get('context_length') or '?'} tokens")
    cards = [number_card("Max context, tokens (est.)", model.get("max_context"), handle="max-context", width=220)]
    if engine:
        cards += [number_card("Running", engine.get("running"), handle="engine-running"),
                  number_card("Queued", engine.get("queue_depth"), handle="engine-queued"),
                  number_card("Tokens/s", engine.get("tokens_per_s"), "{value:,.1f}", handle="engine-tps"),
                  number_card("KV cache", (engine.get("kv_cache_bytes") or 0) / 2**20, "{value:,.1f} MiB",
                              handle="engine-kv")]
    note = ("The maximum context is the engine's estimate of what fits in the memory left after loading the model "
            "(and never more than the model allows).")
    return [pn.pane.Markdown(facts), pn.FlexBox(*cards), pn.pane.Markdown(note, styles={"opacity": ".7"})]


def resources_view(session: UiSession) -> pn.viewable.Viewable:
    state = ResourcesState(session.client)
    try:
        first = state.poll()
    except ApiError as exc:
        return pn.pane.Alert(f"The resources could not be read: {exc.message}", alert_type="danger")
    source = ColumnDataSource(first)
    cpu = state.report["cpu"]
    charts: list[pn.viewable.Viewable] = []
    if state.gpus:
        names = [(gpu["index"], gpu["name"]) for gpu in state.gpus]
        charts += [
            pn.pane.Bokeh(_time_chart("GPU memory used", source, [(f"gpu{i}_memory_gb", f"{i}: {name}")
                                                                  for i, name in names], "GB")),
            pn.pane.Bokeh(_time_chart("GPU utilisation", source, [(f"gpu{i}_utilization", f"{i}: {name}")
                                                                  for i, name in names], "%", percent=True))]
        gpu_line = ", ".join(f"{gpu['index']}: {gpu['name']} ({gpu['memory_total_bytes'] / GB:,.0f} GB)"
                             for gpu in state.gpus)
        hardware = pn.pane.Markdown(f"**GPUs:** {gpu_line}")
    else:
        hardware = pn.pane.Alert("No GPU on this machine (none visible to the API): the local engine runs on "
                                 "the CPU, so only CPU and memory are charted.", alert_type="info",
                                 css_classes=["llmws-no-gpu"])
    charts += [
        pn.pane.Bokeh(_time_chart("CPU and memory utilisation", source,
                                  [("cpu_percent", f"CPU ({cpu['cpu_count']} cores)"), ("ram_percent", "RAM")],
                                  "%", percent=True)),
        pn.pane.Bokeh(_time_chart(f"Memory used (of {cpu['memory_total_bytes'] / GB:,.1f} GB)", source,
                                  [("ram_used_gb", "machine"), ("process_gb", "API process")], "GB"))]
    sampled = pn.pane.Markdown("", css_classes=["llmws-samples"])
    model = pn.Column(*_model_panel(state), sizing_mode="stretch_width")
    message = pn.pane.Alert("", alert_type="warning", visible=False)
    shown = [(state.model, state.engine)]

    def show_sampled() -> None:
        at = state.last_sample_at.strftime("%H:%M:%S")
        sampled.object = f"{state.samples} samples · last at {at} UTC · every {POLL_MS // 1000} s"

    def tick() -> None:
        try:
            point = state.poll()
        except ApiError as exc:
            message.object, message.visible = f"Could not read the resources: {exc.message}", True
            return
        message.visible = False
        if set(point) == set(source.data):  # a GPU appearing or vanishing would need other columns
            source.stream(point, rollover=ROLLOVER)
        if (state.model, state.engine) != shown[0]:  # rebuilt only when it changed, so it does not flicker
            shown[0] = (state.model, state.engine)
            model[:] = _model_panel(state)
        show_sampled()

    show_sampled()
    pn.state.add_periodic_callback(tick, period=POLL_MS)
    return pn.Column(message, hardware, model, sampled, pn.GridBox(*charts, ncols=2, sizing_mode="stretch_width"),
                     sizing_mode="stretch_width")
