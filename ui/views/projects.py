"""The projects page: the user's projects (each with a description, a default system prompt and a default model)
to create, edit and delete, and the selected project's conversations."""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn

from ui.client import ApiError
from ui.shell import UiSession
from ui.views.conversation_browser import attempt, conversation_browser
from ui.views.library_state import ConversationList, ProjectList

NEW = "New project"
NO_MODEL = "(the chat's choice)"


def _model_options(session: UiSession) -> dict[str, str]:
    try:
        served = [model["id"] for model in session.client.models()]
    except ApiError:  # a project can still be edited without the model list
        served = []
    return {NO_MODEL: ""} | {model: model for model in served}


def projects_view(session: UiSession) -> pn.viewable.Viewable:
    projects = ProjectList(session.client)
    conversations = ConversationList(session.client)
    projects.refresh()

    picker = pn.widgets.Select(name="Project", css_classes=["llmws-project-picker"], width=320)
    name = pn.widgets.TextInput(name="Name", css_classes=["llmws-project-name"], width=320)
    description = pn.widgets.TextAreaInput(name="Description", css_classes=["llmws-project-description"],
                                           height=70, sizing_mode="stretch_width")
    system_prompt = pn.widgets.TextAreaInput(name="Default system prompt", height=110, sizing_mode="stretch_width",
                                             css_classes=["llmws-project-system-prompt"])
    models = _model_options(session)
    default_model = pn.widgets.Select(name="Default model", options=models, css_classes=["llmws-project-model"],
                                      width=320)
    save = pn.widgets.Button(name="Create project", button_type="primary", css_classes=["llmws-project-save"])
    delete = pn.widgets.Button(name="Delete project", button_type="danger", button_style="outline",
                               css_classes=["llmws-project-delete"])
    confirm = pn.widgets.Button(name="Yes, delete the project", button_type="danger",
                                css_classes=["llmws-project-confirm-delete"])
    question = pn.Row(pn.pane.Str("Its conversations stay, outside any project."), confirm, visible=False)
    overview = pn.widgets.Tabulator(pd.DataFrame(), show_index=False, disabled=True, selectable=False,
                                    sizing_mode="stretch_width", css_classes=["llmws-projects"])
    heading = pn.pane.Markdown("", css_classes=["llmws-project-heading"])

    def show_projects(*_events: Any) -> None:
        picker.options = {NEW: ""} | projects.labels()
        picker.value = projects.selected["id"] if projects.selected else ""
        overview.value = pd.DataFrame([{"name": row["name"], "description": row["description"] or "",
                                        "default model": row["default_model"] or ""} for row in projects.rows])

    def show_selected(*_events: Any) -> None:
        chosen = projects.selected or {}
        picker.value = chosen.get("id", "")
        name.value = chosen.get("name", "")
        description.value = chosen.get("description") or ""
        system_prompt.value = chosen.get("system_prompt") or ""
        model = chosen.get("default_model") or ""
        default_model.options = models if model in models.values() else models | {model: model}
        default_model.value = model
        save.name = "Save project" if projects.selected else "Create project"
        delete.visible = projects.selected is not None
        question.visible = False
        conversations.project_id = chosen.get("id")
        heading.object = f"### Conversations in {chosen['name']}" if chosen else ""
        if projects.selected is None:
            conversations.rows, conversations.total, conversations.opened = [], 0, None
        else:
            conversations.offset, conversations.opened = 0, None
            attempt(conversations.refresh)
        browser.visible = projects.selected is not None

    def saved() -> None:
        fields = (name.value, description.value, system_prompt.value, default_model.value)
        if projects.selected:
            projects.save(*fields)
        else:
            projects.create(*fields)

    picker.param.watch(lambda event: projects.select(event.new or None), "value")
    overview.on_click(lambda event: projects.select(projects.rows[event.row]["id"])
                      if 0 <= event.row < len(projects.rows) else None)
    save.on_click(lambda _event: attempt(saved, "Project saved."))
    delete.on_click(lambda _event: setattr(question, "visible", True))
    confirm.on_click(lambda _event: attempt(projects.delete, "Project deleted."))
    projects.param.watch(show_projects, "rows")
    projects.param.watch(show_selected, "selected")
    # Only this project's conversations: the search box would search all of them, so it is left to /history.
    browser = conversation_browser(conversations, projects, searchable=False)
    wanted = (pn.state.session_args.get("project") or [b""])[0].decode()
    projects.select(wanted or None)
    show_projects()
    show_selected()

    editor = pn.Column(picker, name, description, system_prompt, default_model, pn.Row(save, delete), question,
                       sizing_mode="stretch_width")
    return pn.Column(pn.Row(pn.Column(editor, width=560), pn.Column(overview, sizing_mode="stretch_width"),
                            sizing_mode="stretch_width"),
                     heading, browser, sizing_mode="stretch_width")
