"""The prompt library: system prompts (optionally with a user template around the chat's ``{input}``), shared
with everyone or kept personal, created, edited and deleted through ``/v1/prompts``."""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn
import param

from ui.client import ApiClient, ApiError
from ui.shell import UiSession

VISIBILITY = ["Personal", "Shared"]
COLUMNS = ["id", "name", "visibility", "template", "content", "updated_at"]


class PromptsState(param.Parameterized):
    """One page of the library and the prompt being edited (None: a new one)."""

    offset = param.Integer(default=0, bounds=(0, None))
    limit = param.Integer(default=25, bounds=(1, 200))
    rows = param.List(default=[])
    total = param.Integer(default=0)
    selected = param.Dict(default=None, allow_None=True, doc="The prompt being edited, on this page or not.")

    def __init__(self, client: ApiClient, **params: Any) -> None:
        super().__init__(**params)
        self.client = client

    def load(self) -> None:
        page = self.client.prompts(offset=self.offset, limit=self.limit)
        self.rows, self.total = page["data"], page["total"]

    def next_page(self) -> None:
        if self.offset + self.limit < self.total:
            self.offset += self.limit
            self.load()

    def previous_page(self) -> None:
        if self.offset:
            self.offset = max(0, self.offset - self.limit)
            self.load()

    @property
    def selected_id(self) -> int | None:
        return None if self.selected is None else self.selected["id"]

    def select(self, prompt_id: int | None) -> None:
        self.selected = next((row for row in self.rows if row["id"] == prompt_id), None)

    @property
    def selected_index(self) -> int | None:
        """Where the edited prompt is in this page's rows; None when it is on another page."""
        return next((index for index, row in enumerate(self.rows) if row["id"] == self.selected_id), None)

    def table_rows(self) -> list[dict[str, Any]]:
        return [{"id": row["id"], "name": row["name"], "visibility": "shared" if row["is_shared"] else "personal",
                 "template": row["user_template"] or "", "content": _preview(row["content"]),
                 "updated_at": row["updated_at"]} for row in self.rows]

    @staticmethod
    def fields(name: str, content: str, user_template: str, shared: bool) -> dict[str, Any]:
        """The API body; an empty template is null (a plain system prompt), not an empty string."""
        return {"name": name.strip(), "content": content, "is_shared": shared,
                "user_template": user_template.strip() or None}

    def create(self, name: str, content: str, user_template: str = "", shared: bool = False) -> dict[str, Any]:
        fields = self.fields(name, content, user_template, shared)
        prompt = self.client.create_prompt({key: value for key, value in fields.items() if value is not None})
        self.selected = prompt
        self.load()
        return prompt

    def update(self, name: str, content: str, user_template: str = "", shared: bool = False) -> dict[str, Any]:
        if self.selected_id is None:
            raise ApiError(0, "select a prompt in the table first")
        prompt = self.client.update_prompt(self.selected_id, self.fields(name, content, user_template, shared))
        self.selected = prompt
        self.load()
        return prompt

    def delete(self) -> None:
        if self.selected_id is None:
            raise ApiError(0, "select a prompt in the table first")
        self.client.delete_prompt(self.selected_id)
        self.selected = None
        self.load()


def _preview(text: str, length: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= length else flat[: length - 1] + "…"


def prompts_view(session: UiSession) -> pn.viewable.Viewable:
    state = PromptsState(session.client)
    table = pn.widgets.Tabulator(pd.DataFrame(columns=COLUMNS), disabled=True, selectable=1, show_index=False,
                                 sizing_mode="stretch_width", css_classes=["llmws-prompts-table"],
                                 widths={"id": 60, "name": 180, "visibility": 100, "template": 180})
    previous = pn.widgets.Button(name="Previous", width=100)
    following = pn.widgets.Button(name="Next", width=100)
    page_label = pn.pane.Markdown("")
    message = pn.pane.Alert("", visible=False)

    heading = pn.pane.Markdown("### New prompt")
    name = pn.widgets.TextInput(name="Name", sizing_mode="stretch_width", css_classes=["llmws-prompt-name"])
    content = pn.widgets.TextAreaInput(name="System prompt", height=160, sizing_mode="stretch_width",
                                       css_classes=["llmws-prompt-content"])
    template = pn.widgets.TextAreaInput(name="User template (optional, must contain {input})", height=90,
                                        placeholder="Translate into French: {input}", sizing_mode="stretch_width",
                                        css_classes=["llmws-prompt-template"])
    visibility = pn.widgets.RadioButtonGroup(name="Visibility", options=VISIBILITY, value="Personal",
                                             css_classes=["llmws-prompt-visibility"])
    create = pn.widgets.Button(name="Create prompt", button_type="primary", width=125)
    save = pn.widgets.Button(name="Save changes", button_type="primary", width=125)
    delete = pn.widgets.Button(name="Delete prompt", button_type="danger", width=125)
    new = pn.widgets.Button(name="New prompt", width=125)

    def form() -> dict[str, Any]:
        return {"name": name.value, "content": content.value, "user_template": template.value,
                "shared": visibility.value == "Shared"}

    def show() -> None:
        table.value = pd.DataFrame(state.table_rows(), columns=COLUMNS)
        index = state.selected_index
        table.selection = [] if index is None else [index]
        last = state.offset + len(state.rows)
        page_label.object = f"Prompts {state.offset + 1 if state.rows else 0}–{last} of {state.total}"
        previous.disabled, following.disabled = state.offset == 0, last >= state.total
        show_form()

    def show_form() -> None:
        prompt = state.selected
        editing = prompt is not None
        create.visible, save.visible, delete.visible = not editing, editing, editing
        heading.object = f"### Edit “{prompt['name']}”" if editing else "### New prompt"
        name.value = prompt["name"] if editing else ""
        content.value = prompt["content"] if editing else ""
        template.value = (prompt["user_template"] or "") if editing else ""
        visibility.value = "Shared" if editing and prompt["is_shared"] else "Personal"

    def act(action: Any, done: str) -> None:
        try:
            action()
        except ApiError as exc:
            message.object, message.alert_type, message.visible = exc.message, "danger", True
            return
        message.object, message.alert_type, message.visible = done, "success", bool(done)
        show()

    def on_select(event: param.parameterized.Event) -> None:
        rows = event.new
        selected_id = state.rows[rows[0]]["id"] if rows and rows[0] < len(state.rows) else None
        if selected_id is not None and selected_id != state.selected_id:
            state.select(selected_id)
            show_form()

    def on_new(_event: object) -> None:
        state.selected = None
        table.selection = []
        show_form()

    table.param.watch(on_select, "selection")
    create.on_click(lambda _event: act(lambda: state.create(**form()), f"Created “{name.value.strip()}”."))
    save.on_click(lambda _event: act(lambda: state.update(**form()), "Saved."))
    delete.on_click(lambda _event: act(state.delete, "Deleted."))
    new.on_click(on_new)
    previous.on_click(lambda _event: act(state.previous_page, ""))
    following.on_click(lambda _event: act(state.next_page, ""))
    act(state.load, "")

    editor = pn.Column(heading, name, content, template, visibility, pn.Row(create, save, delete, new), width=460)
    return pn.Column(message, pn.Row(pn.Column(table, pn.Row(previous, following, page_label),
                                               sizing_mode="stretch_width"), editor),
                     sizing_mode="stretch_width")
