"""The conversation browser the history and projects pages share: a searchable, paged table of conversations and,
beside it, the one opened — its messages as markdown, with rename, move, delete, export and a way back into chat.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable
from typing import Any

import pandas as pd
import panel as pn

from ui.client import ApiError
from ui.views.library_state import NO_PROJECT, ConversationList, ProjectList
from ui.views.tool_calls import with_calls

COLUMNS = ["id", "title", "project", "updated"]
ROLE_LABELS = {"user": "You", "assistant": "Assistant", "system": "System", "tool": "Tool"}


def attempt(action: Callable[[], Any], done: str | None = None) -> bool:
    """Run an API action for a button; the API's refusal is shown to the user instead of being raised."""
    try:
        action()
    except ApiError as exc:
        if pn.state.notifications is not None:
            pn.state.notifications.error(exc.message, duration=8000)
        return False
    if done and pn.state.notifications is not None:
        pn.state.notifications.success(done, duration=3000)
    return True


def _frame(conversations: ConversationList, projects: ProjectList) -> pd.DataFrame:
    names = projects.names()
    return pd.DataFrame([{
        "id": row["id"], "title": row["title"], "project": names.get(row["project_id"] or "", ""),
        "updated": str(row["updated_at"])[:16].replace("T", " "),
    } for row in conversations.rows], columns=COLUMNS)


def conversation_table(conversations: ConversationList, projects: ProjectList, *, searchable: bool = True
                       ) -> pn.Column:
    """The list side: search box, the page of conversations (a click opens one), Previous/Next."""
    table = pn.widgets.Tabulator(_frame(conversations, projects), show_index=False, disabled=True, selectable=False,
                                 hidden_columns=["id"], layout="fit_data_stretch", sizing_mode="stretch_width",
                                 css_classes=["llmws-conversations"], height=420)
    previous = pn.widgets.Button(name="Previous", css_classes=["llmws-previous"], width=100)
    following = pn.widgets.Button(name="Next", css_classes=["llmws-next"], width=100)
    position = pn.pane.Str("", css_classes=["llmws-position"])

    def show(*_events: Any) -> None:
        table.value = _frame(conversations, projects)
        position.object = conversations.position
        previous.disabled, following.disabled = not conversations.has_previous, not conversations.has_next

    def open_clicked(event: Any) -> None:
        if 0 <= event.row < len(conversations.rows):
            attempt(lambda: conversations.open(conversations.rows[event.row]["id"]))

    table.on_click(open_clicked)
    previous.on_click(lambda _event: attempt(conversations.previous_page))
    following.on_click(lambda _event: attempt(conversations.next_page))
    conversations.param.watch(show, ["rows", "total"])
    projects.param.watch(show, "rows")
    show()
    parts: list[Any] = []
    if searchable:
        search = pn.widgets.TextInput(name="Search titles", placeholder="Part of a title, then Enter",
                                      css_classes=["llmws-search"], sizing_mode="stretch_width")
        search.param.watch(lambda event: attempt(lambda: conversations.search(event.new)), "value")
        parts.append(search)
    return pn.Column(*parts, table, pn.Row(previous, following, position), sizing_mode="stretch_width")


def _messages(detail: dict[str, Any]) -> list[pn.viewable.Viewable]:
    panes: list[pn.viewable.Viewable] = []
    for message in detail.get("messages", []):
        who = ROLE_LABELS.get(message["role"], message["role"])
        if message.get("model") and message["role"] == "assistant":
            who += f" · {message['model']}"
        panes.append(pn.pane.HTML(f"<b>{html.escape(who)}</b>", margin=(10, 10, 0, 10)))
        # Raw HTML in a message stays text: a model's reply is not trusted to write into the page.
        if message.get("tool_call_id"):
            who += f" · result of {message['tool_call_id']}"
        shown = with_calls(message["content"], message.get("tool_calls") or [])
        panes.append(pn.pane.Markdown(shown, renderer_options={"html": False}, disable_anchors=True,
                                      css_classes=["llmws-message", f"llmws-message-{message['role']}"],
                                      sizing_mode="stretch_width"))
    if not panes:
        panes.append(pn.pane.Markdown("*No messages yet.*"))
    return panes


def _actions(conversations: ConversationList, projects: ProjectList, detail: dict[str, Any]) -> pn.Column:
    rename_to = pn.widgets.TextInput(name="Title", value=detail["title"], css_classes=["llmws-rename-title"],
                                     width=320)
    rename = pn.widgets.Button(name="Rename", css_classes=["llmws-rename"], align="end")
    rename.on_click(lambda _event: attempt(lambda: conversations.rename(rename_to.value), "Renamed."))

    choices = projects.move_choices()
    move_to = pn.widgets.Select(name="Project", options=choices, css_classes=["llmws-move-project"], width=320,
                                value=detail["project_id"] if detail["project_id"] in choices.values() else "")
    move = pn.widgets.Button(name="Move", css_classes=["llmws-move"], align="end")
    move.on_click(lambda _event: attempt(lambda: conversations.move(move_to.value),
                                         f"Moved to {projects.names().get(move_to.value or '', NO_PROJECT)}."))

    downloads = [pn.widgets.FileDownload(
        callback=lambda fmt=fmt: io.StringIO(conversations.export(fmt)), filename=conversations.export_filename(fmt),
        label=f"Export {label}", css_classes=[f"llmws-export-{fmt}"], button_type="primary", button_style="outline")
        for fmt, label in (("markdown", "Markdown"), ("json", "JSON"))]

    # Deleting takes a second click on a button that only the first one shows.
    delete = pn.widgets.Button(name="Delete", button_type="danger", button_style="outline",
                               css_classes=["llmws-delete"])
    confirm = pn.widgets.Button(name="Yes, delete it", button_type="danger", css_classes=["llmws-confirm-delete"])
    cancel = pn.widgets.Button(name="Cancel", css_classes=["llmws-cancel-delete"])
    question = pn.Row(pn.pane.Str("Delete this conversation and its messages for good?"), confirm, cancel,
                      visible=False)
    delete.on_click(lambda _event: setattr(question, "visible", True))
    cancel.on_click(lambda _event: setattr(question, "visible", False))
    confirm.on_click(lambda _event: attempt(conversations.delete, "Deleted."))

    continue_link = pn.pane.HTML(f'<a class="llmws-continue" href="/chat?conversation={html.escape(detail["id"])}">'
                                 'Continue in chat →</a>', align="center")
    return pn.Column(pn.Row(rename_to, rename), pn.Row(move_to, move), pn.Row(*downloads, delete, continue_link),
                     question, sizing_mode="stretch_width")


def conversation_detail(conversations: ConversationList, projects: ProjectList) -> pn.viewable.Viewable:
    """The opened conversation, redrawn whenever another is opened or this one changes."""

    def render(opened: dict[str, Any] | None) -> pn.viewable.Viewable:
        if opened is None:
            return pn.pane.Markdown("*Pick a conversation to read it.*", css_classes=["llmws-no-conversation"])
        return pn.Column(
            pn.pane.HTML(f'<h3 class="llmws-conversation-title">{html.escape(opened["title"])}</h3>'),
            _actions(conversations, projects, opened),
            pn.layout.Divider(),
            pn.Column(*_messages(opened), css_classes=["llmws-messages"], sizing_mode="stretch_width"),
            sizing_mode="stretch_width")

    return pn.panel(pn.bind(render, conversations.param.opened), sizing_mode="stretch_width")


def conversation_browser(conversations: ConversationList, projects: ProjectList, *, searchable: bool = True
                         ) -> pn.Row:
    return pn.Row(
        pn.Column(conversation_table(conversations, projects, searchable=searchable), width=560),
        pn.Column(conversation_detail(conversations, projects), sizing_mode="stretch_width"),
        sizing_mode="stretch_width")
