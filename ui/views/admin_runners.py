"""The runners admin page: a launch form whose exact command is previewed before anything starts, the runners
with their status, a live tail of one runner's log, and stopping."""

from __future__ import annotations

import html

import panel as pn

from ui.client import ApiError
from ui.shell import UiSession
from ui.views.admin_runners_state import ALIVE, RunnersState
from ui.views.admin_widgets import Feedback, chosen, refill, table

COLUMNS = ["id", "name", "template", "status", "exit code", "uptime (s)", "port", "restarts", "provider"]
POLL_MS = 1000
BOX = {"border": "1px solid #ddd", "border-radius": "6px", "padding": "8px"}
CONSOLE = {"background": "#111", "color": "#ddd", "padding": "8px", "max-height": "360px", "overflow": "auto",
           "font-size": "12px", "white-space": "pre-wrap"}


def _pre(text: str, css: str) -> str:
    return f'<pre class="{css}" style="margin: 0">{html.escape(text)}</pre>'


def runners_view(session: UiSession) -> pn.viewable.Viewable:
    state = RunnersState(session.client)
    state.load()
    feedback = Feedback()
    return pn.Column(feedback.pane, "### Launch", _launch_form(state, feedback), "### Runners",
                     _runners_section(state, feedback), sizing_mode="stretch_width")


def _launch_form(state: RunnersState, feedback: Feedback) -> pn.viewable.Viewable:
    templates = {f"{t['name']}{'' if t['available'] else ' (not installed)'}": t["name"] for t in state.templates}
    template = pn.widgets.Select(name="Template", options=templates, value=state.template or None,
                                 disabled_options=[t["name"] for t in state.templates if not t["available"]],
                                 css_classes=["llmws-runner-template"])
    model = pn.widgets.Select(name="Model", options={m["name"]: m["path"] for m in state.models},
                              value=state.model or None, css_classes=["llmws-runner-model"])
    port = pn.widgets.TextInput.from_param(state.param.port, name="Port (empty: a free one)",
                                           css_classes=["llmws-runner-port"])
    context = pn.widgets.TextInput.from_param(state.param.context, name="Context (tokens)",
                                              css_classes=["llmws-runner-context"])
    extras = pn.widgets.CheckBoxGroup(name="Extras", options=[], inline=True, css_classes=["llmws-runner-extras"])
    preview = pn.pane.HTML(sizing_mode="stretch_width", css_classes=["llmws-runner-preview"])

    def template_chosen(*_events: object) -> None:
        state.template = template.value or ""
        info = state.template_info() or {}
        extras.param.update(options=info.get("extras", []), value=[])
        context.disabled = not info.get("context", False)
        if context.disabled:
            state.context = ""

    def show_preview(*_events: object) -> None:
        command = (state.preview or {}).get("command")
        preview.object = _pre(command, "llmws-runner-command") if command else "<em>Preview the command first.</em>"

    template.param.watch(template_chosen, "value")
    model.param.watch(lambda event: setattr(state, "model", event.new or ""), "value")
    extras.param.watch(lambda event: setattr(state, "extras", list(event.new)), "value")
    # A preview describes the form as it was: any change clears it, so what launches is what was read.
    state.param.watch(lambda _event: setattr(state, "preview", None), ["template", "model", "port", "context",
                                                                        "extras"])
    state.param.watch(show_preview, "preview")
    template_chosen()
    show_preview()

    def make_preview() -> None:
        state.make_preview()

    def launch() -> str:
        if state.preview is None:
            raise ApiError(400, "preview the command before launching it", "invalid_value")
        runner = state.launch()
        return f"Launched {runner['name']} ({runner['id']}): {runner['status']}."

    return pn.Column(pn.Row(template, model), pn.Row(port, context), pn.Row("Extras:", extras),
                     pn.Row(feedback.button("Preview command", make_preview, css="llmws-runner-preview-button"),
                            feedback.button("Launch", launch, kind="primary", css="llmws-runner-launch")),
                     preview, styles=BOX, sizing_mode="stretch_width")


def _runners_section(state: RunnersState, feedback: Feedback) -> pn.viewable.Viewable:
    runners = table(state.table(), COLUMNS, "llmws-runners-table")
    state.param.watch(lambda _event: refill(runners, state.table(), COLUMNS), "rows")
    title = pn.pane.Markdown("Select a runner to follow its log.", css_classes=["llmws-runner-log-title"])
    console = pn.pane.HTML(_pre("", "llmws-runner-log"), styles=CONSOLE, sizing_mode="stretch_width")

    def show_log(*_events: object) -> None:
        console.object = _pre(state.log_text(), "llmws-runner-log")
        if state.selected:
            title.object = f"Log of **{state.selected}**{' (ended)' if state.log_ended else ''}"

    state.param.watch(show_log, ["log", "log_ended", "selected"])
    runners.param.watch(lambda _event: state.select(chosen_or_none()), "selection")

    def chosen_or_none() -> str | None:
        try:
            return str(chosen(runners, "id", "a runner"))
        except ApiError:
            return state.selected  # deselecting keeps the log in view

    def stop() -> str:
        runner_id = str(chosen(runners, "id", "a runner"))
        stopped = state.stop(runner_id)
        return f"{stopped['name']} is {stopped['status']}."

    async def tick() -> None:
        try:
            if any(row["status"] in ALIVE for row in state.rows) or state.selected:
                state.refresh()
            await state.follow_logs()
        except ApiError as exc:
            feedback.error(exc.message)

    pn.state.add_periodic_callback(tick, period=POLL_MS)
    return pn.Column(runners, pn.Row(
        feedback.button("Stop selected", stop, kind="warning", css="llmws-runner-stop"),
        feedback.button("Reload", lambda: state.refresh(), css="llmws-runner-reload")), title, console,
        sizing_mode="stretch_width")
