"""The providers admin page: the upstream OpenAI-compatible servers with their health, a form to add or change
one, disabling and enabling, and a connection test that lists the upstream's models."""

from __future__ import annotations

import panel as pn

from ui.shell import UiSession
from ui.views.admin_gateway_state import PROVIDER_KINDS, ProvidersState
from ui.views.admin_widgets import Feedback, chosen, refill, table

COLUMNS = ["id", "name", "kind", "base URL", "active", "health", "models"]


def providers_view(session: UiSession) -> pn.viewable.Viewable:
    state = ProvidersState(session.client)
    state.refresh()
    feedback = Feedback()
    providers = table(state.table(), COLUMNS, "llmws-providers-table")
    state.param.watch(lambda _event: refill(providers, state.table(), COLUMNS), "rows")

    def selected() -> int:
        return int(chosen(providers, "id", "a provider"))

    def edit() -> str:
        state.edit(selected())
        return f"Editing {state.provider_name}."

    def set_active(active: bool) -> str:
        changed = state.set_active(selected(), active)
        return f"{changed['name']} is {'enabled' if active else 'disabled'}."

    def test() -> None:
        state.test(selected())  # the answer shows below the buttons, good or bad

    def save() -> str:
        creating = state.editing_id is None
        saved = state.save()
        return f"{saved['name']} {'created' if creating else 'saved'}."

    def new() -> str:
        state.new()
        return "New provider: fill in the form."

    def reload() -> None:
        state.refresh()

    test_result = pn.pane.Markdown(state.test_summary(), css_classes=["llmws-provider-test"],
                                   sizing_mode="stretch_width")
    state.param.watch(lambda _event: test_result.param.update(object=state.test_summary()), "test_result")
    actions = pn.Row(
        feedback.button("Edit selected", edit, css="llmws-provider-edit"),
        feedback.button("Disable", lambda: set_active(False), kind="warning", css="llmws-provider-disable"),
        feedback.button("Enable", lambda: set_active(True), css="llmws-provider-enable"),
        feedback.button("Test connection", test, kind="primary", css="llmws-provider-test-button"),
        feedback.button("Reload", reload, css="llmws-provider-reload"),
    )
    heading = pn.pane.Markdown(sizing_mode="stretch_width")

    def show_heading(*_events: object) -> None:
        heading.object = "### New provider" if state.editing_id is None else f"### Edit provider #{state.editing_id}"

    show_heading()
    state.param.watch(show_heading, "editing_id")
    form = pn.Column(
        heading,
        pn.widgets.TextInput.from_param(state.param.provider_name, name="Name", placeholder="e.g. my-vllm",
                                        css_classes=["llmws-provider-name"]),
        pn.widgets.Select.from_param(state.param.kind, name="Kind", options=PROVIDER_KINDS,
                                     css_classes=["llmws-provider-kind"]),
        pn.widgets.TextInput.from_param(state.param.base_url, name="Base URL",
                                        placeholder="http://host:8000/v1", css_classes=["llmws-provider-url"]),
        pn.widgets.PasswordInput.from_param(state.param.api_key,
                                            name="API key (stored encrypted; empty: keep; needed again for a new URL)",
                                            css_classes=["llmws-provider-key"]),
        pn.widgets.FloatInput.from_param(state.param.timeout_s, name="Timeout (s)",
                                         css_classes=["llmws-provider-timeout"]),
        pn.Row(feedback.button("Save provider", save, kind="primary", css="llmws-provider-save"),
               feedback.button("New provider", new, css="llmws-provider-new")),
        styles={"border": "1px solid #ddd", "border-radius": "6px", "padding": "8px"}, width=460,
    )
    return pn.Column(feedback.pane, "Select a provider in the table, then act on it.", providers, actions,
                     test_result, form, sizing_mode="stretch_width")

