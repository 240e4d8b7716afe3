"""The models admin page: the catalog of aliases with their deployments, the local models on disk (load, delete
with a confirmation) and downloading a model with its progress followed live."""

from __future__ import annotations

import panel as pn
from panel.io.callbacks import PeriodicCallback

from ui.client import ApiError
from ui.shell import UiSession
from ui.views.admin_engine_state import DownloadState, LocalModelsState
from ui.views.admin_gateway_state import LOCAL, CatalogState
from ui.views.admin_widgets import Feedback, chosen, refill, table

CATALOG_COLUMNS = ["id", "name", "description", "deployments", "active"]
LOCAL_COLUMNS = ["name", "loaded", "format", "architecture", "parameters", "size", "context", "dtype", "folder"]
POLL_MS = 500
BOX = {"border": "1px solid #ddd", "border-radius": "6px", "padding": "8px"}


def models_view(session: UiSession) -> pn.viewable.Viewable:
    feedback = Feedback()
    catalog = CatalogState(session.client)
    local = LocalModelsState(session.client)
    catalog.refresh()
    local.refresh()
    return pn.Column(feedback.pane, "### Catalog", _catalog_section(catalog, feedback),
                     "### Local models", _local_section(local, feedback),
                     "### Download a model", _download_section(DownloadState(session.client), local, feedback),
                     sizing_mode="stretch_width")


def _catalog_section(state: CatalogState, feedback: Feedback) -> pn.viewable.Viewable:
    aliases = table(state.table(), CATALOG_COLUMNS, "llmws-catalog-table")
    state.param.watch(lambda _event: refill(aliases, state.table(), CATALOG_COLUMNS), "rows")

    def edit() -> str:
        state.edit(int(chosen(aliases, "id", "an alias")))
        return f"Editing {state.alias_name}."

    def delete() -> str:
        model_id = int(chosen(aliases, "id", "an alias"))
        name = state.alias(model_id)["name"]
        state.delete(model_id)
        return f"{name} deleted."

    def save() -> str:
        creating = state.editing_id is None
        saved = state.save()
        return f"{saved['name']} {'created' if creating else 'saved'}."

    def new() -> str:
        state.new()
        return "New alias: fill in the form."

    form = pn.Column(
        pn.widgets.TextInput.from_param(state.param.alias_name, name="Alias name", width=520,
                                        css_classes=["llmws-alias-name"]),
        pn.widgets.TextInput.from_param(state.param.description, name="Description", width=520,
                                        css_classes=["llmws-alias-description"]),
        pn.widgets.TextAreaInput.from_param(
            state.param.deployments, name=f"Deployments, one a line: '<provider> <upstream model>' or '{LOCAL}'",
            placeholder=f"my-vllm Qwen/Qwen2.5-7B-Instruct\n{LOCAL}", height=100, width=520,
            css_classes=["llmws-alias-deployments"]),
        pn.Row(feedback.button("Save alias", save, kind="primary", css="llmws-alias-save"),
               feedback.button("New alias", new, css="llmws-alias-new")),
        styles=BOX, width=560)
    return pn.Column(aliases, pn.Row(
        feedback.button("Edit alias", edit, css="llmws-alias-edit"),
        feedback.button("Delete alias", delete, kind="danger", css="llmws-alias-delete"),
        feedback.button("Reload", lambda: state.refresh(), css="llmws-catalog-reload")), form,
        sizing_mode="stretch_width")


def _local_section(state: LocalModelsState, feedback: Feedback) -> pn.viewable.Viewable:
    models = table(state.table(), LOCAL_COLUMNS, "llmws-local-table")
    state.param.watch(lambda _event: refill(models, state.table(), LOCAL_COLUMNS), "rows")

    def load() -> str:
        name = str(chosen(models, "name", "a local model"))
        state.switch(name)
        return f"{name} is loaded."

    def ask() -> None:
        state.ask_delete(str(chosen(models, "name", "a local model")))

    def confirm() -> str:
        return f"{state.confirm_delete()} deleted from disk."

    question = pn.pane.Markdown(css_classes=["llmws-delete-question"])
    confirmation = pn.Row(question, feedback.button("Confirm delete", confirm, kind="danger",
                                                    css="llmws-delete-confirm"),
                          feedback.button("Keep it", lambda: state.keep(), css="llmws-delete-keep"),
                          visible=False, styles=BOX)

    def show_confirmation(*_events: object) -> None:
        if state.pending_delete:
            question.object = f"Delete **{state.pending_delete}** from disk? This cannot be undone."
        confirmation.visible = state.pending_delete is not None

    state.param.watch(show_confirmation, "pending_delete")
    return pn.Column(models, pn.Row(
        feedback.button("Load selected", load, kind="primary", css="llmws-local-load"),
        feedback.button("Delete selected…", ask, kind="danger", css="llmws-local-delete"),
        feedback.button("Reload", lambda: state.refresh(), css="llmws-local-reload")), confirmation,
        sizing_mode="stretch_width")


def _download_section(state: DownloadState, local: LocalModelsState, feedback: Feedback) -> pn.viewable.Viewable:
    progress = pn.indicators.Progress(value=0, max=100, active=False, width=400,
                                      css_classes=["llmws-download-progress"])
    status = pn.pane.Markdown(state.summary(), css_classes=["llmws-download-status"], sizing_mode="stretch_width")
    poller: list[PeriodicCallback] = []  # the running poll, so a new download never starts a second one

    def show(*_events: object) -> None:
        percent = state.percent
        progress.param.update(value=-1 if percent is None else percent, active=state.running,
                              bar_color={"failed": "danger", "cancelled": "warning"}.get(
                                  (state.job or {}).get("status", ""), "success"))
        status.object = state.summary()

    def poll() -> None:
        try:
            state.poll()
        except ApiError as exc:
            feedback.error(f"Following the download failed: {exc.message}")
            stop_polling()
            return
        if not state.running:
            stop_polling()
            local.refresh()  # a completed download is a new local model

    def stop_polling() -> None:
        while poller:
            poller.pop().stop()

    def start() -> str:
        job = state.start()
        stop_polling()
        poller.append(pn.state.add_periodic_callback(poll, period=POLL_MS))
        return f"Downloading {job['name'] or job['source']}…"

    def cancel() -> str:
        state.cancel()
        return "Download cancelled."

    state.param.watch(show, "job")
    return pn.Column(
        pn.Row(pn.widgets.TextInput.from_param(state.param.source, name="Source (Hugging Face owner/name or git URL)",
                                               width=420, css_classes=["llmws-download-source"]),
               pn.widgets.TextInput.from_param(state.param.folder_name, name="Folder name (optional)", width=220,
                                               css_classes=["llmws-download-name"])),
        pn.Row(feedback.button("Start download", start, kind="primary", css="llmws-download-start"),
               feedback.button("Cancel download", cancel, kind="warning", css="llmws-download-cancel")),
        progress, status, sizing_mode="stretch_width")
