"""View state of the history and projects pages: one page of the user's conversations (searched and paged by the
API), the conversation opened from it, and the user's projects.

Plain ``param`` classes over the ``ApiClient``, so they are tested against the real API without a browser; the
pages only turn them into widgets.
"""

from __future__ import annotations

from typing import Any

import param

from ui.client import ApiClient

Json = dict[str, Any]
NO_PROJECT = "(no project)"
PROJECTS_SHOWN = 200  # the API's largest page; a person's projects are a short list, unlike their conversations
EXPORT_SUFFIXES = {"markdown": "md", "json": "json"}


class ConversationList(param.Parameterized):
    """A page of conversations: all of them, those of one project, or those whose title holds ``query``."""

    query = param.String(default="", doc="Title search, as the API's `q` (any case).")
    project_id = param.String(default=None, allow_None=True, doc="Only this project's conversations.")
    offset = param.Integer(default=0, bounds=(0, None))
    limit = param.Integer(default=20, bounds=(1, 200))
    rows = param.List(default=[], doc="The conversations on this page, most recently active first.")
    total = param.Integer(default=0, doc="How many match, over all pages.")
    opened = param.Dict(default=None, allow_None=True, doc="The conversation shown, with its messages.")

    def __init__(self, client: ApiClient, **params: Any) -> None:
        super().__init__(**params)
        self.client = client

    def refresh(self) -> None:
        page = self.client.conversations(self.offset, self.limit, self.project_id, q=self.query.strip() or None)
        if not page["data"] and self.offset > 0 and page["total"] > 0:
            # The last page emptied (its rows deleted or moved away): show the page before it instead.
            self.offset = max(0, (page["total"] - 1) // self.limit * self.limit)
            page = self.client.conversations(self.offset, self.limit, self.project_id,
                                             q=self.query.strip() or None)
        self.total = page["total"]
        self.rows = page["data"]

    def search(self, text: str) -> None:
        self.query, self.offset = text, 0
        self.refresh()

    @property
    def has_previous(self) -> bool:
        return self.offset > 0

    @property
    def has_next(self) -> bool:
        return self.offset + self.limit < self.total

    def previous_page(self) -> None:
        if self.has_previous:
            self.offset = max(0, self.offset - self.limit)
            self.refresh()

    def next_page(self) -> None:
        if self.has_next:
            self.offset += self.limit
            self.refresh()

    @property
    def position(self) -> str:
        if not self.total:
            return "No conversations"
        return f"{self.offset + 1}–{self.offset + len(self.rows)} of {self.total}"

    def open(self, conversation_id: str) -> Json:
        self.opened = self.client.conversation(conversation_id)
        return self.opened

    def close(self) -> None:
        self.opened = None

    def _opened_id(self) -> str:
        if self.opened is None:
            raise ValueError("no conversation is open")
        return str(self.opened["id"])

    def _changed(self, changes: Json) -> None:
        updated = self.client.update_conversation(self._opened_id(), changes)
        self.opened = {**self.opened, **updated}  # type: ignore[dict-item]
        self.refresh()

    def rename(self, title: str) -> None:
        self._changed({"title": title.strip()})

    def move(self, project_id: str | None) -> None:
        """Into that project, or out of any with None (or "")."""
        self._changed({"project_id": project_id or None})

    def delete(self) -> None:
        self.client.delete_conversation(self._opened_id())
        self.opened = None
        self.refresh()

    def export(self, format: str) -> str:  # noqa: A002 (the API's name for it)
        return self.client.export_conversation(self._opened_id(), format)

    def export_filename(self, format: str) -> str:  # noqa: A002
        return f"conversation-{self._opened_id()}.{EXPORT_SUFFIXES[format]}"


class ProjectList(param.Parameterized):
    """The user's projects and the one selected, each with its default system prompt and model."""

    rows = param.List(default=[])
    selected = param.Dict(default=None, allow_None=True)

    def __init__(self, client: ApiClient, **params: Any) -> None:
        super().__init__(**params)
        self.client = client

    def refresh(self) -> None:
        self.rows = self.client.projects(0, PROJECTS_SHOWN)["data"]
        if self.selected is not None:
            self.selected = next((row for row in self.rows if row["id"] == self.selected["id"]), None)

    def select(self, project_id: str | None) -> None:
        self.selected = next((row for row in self.rows if row["id"] == project_id), None)

    def create(self, name: str, description: str = "", system_prompt: str = "", default_model: str = "") -> Json:
        created = self.client.create_project(name.strip(), description.strip() or None, system_prompt.strip() or None,
                                             default_model or None)
        self.refresh()
        self.select(created["id"])
        return created

    def save(self, name: str, description: str, system_prompt: str, default_model: str) -> Json:
        """Replace the selected project's fields; an empty field clears it (the name excepted)."""
        if self.selected is None:
            raise ValueError("no project is selected")
        saved = self.client.update_project(self.selected["id"], {
            "name": name.strip(), "description": description.strip() or None,
            "system_prompt": system_prompt.strip() or None, "default_model": default_model or None})
        self.refresh()
        return saved

    def delete(self) -> None:
        if self.selected is None:
            raise ValueError("no project is selected")
        self.client.delete_project(self.selected["id"])
        self.selected = None
        self.refresh()

    def names(self) -> dict[str, str]:
        return {row["id"]: row["name"] for row in self.rows}

    def labels(self) -> dict[str, str]:
        """Labels to project ids for a select; two projects of one name are told apart by their id."""
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row["name"]] = counts.get(row["name"], 0) + 1
        return {(row["name"] if counts[row["name"]] == 1 else f'{row["name"]} ({row["id"][:8]})'): row["id"]
                for row in self.rows}

    def move_choices(self) -> dict[str, str]:
        """Labels to project ids, with the way out of every project ("", as a select cannot show None) first."""
        return {NO_PROJECT: ""} | self.labels()
