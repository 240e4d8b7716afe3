"""User administration: a page of accounts at a time, creating one, and for the selected one disabling or
enabling it, changing its role, or resetting its password (``PATCH /admin/users/{id}``)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn
import param

from ui.client import ApiClient, ApiError
from ui.shell import UiSession

ROLES = ["user", "admin"]
COLUMNS = ["id", "username", "email", "role", "is_active", "created_at", "last_login_at"]


class UsersState(param.Parameterized):
    """One page of ``GET /admin/users`` and the account the admin has picked from it."""

    offset = param.Integer(default=0, bounds=(0, None))
    limit = param.Integer(default=25, bounds=(1, 500))
    rows = param.List(default=[])
    selected = param.Dict(default=None, allow_None=True, doc="The account acted on, on this page or not.")

    def __init__(self, client: ApiClient, **params: Any) -> None:
        super().__init__(**params)
        self.client = client

    def load(self) -> None:
        self.rows = self.client.users(offset=self.offset, limit=self.limit)["data"]

    @property
    def has_previous(self) -> bool:
        return self.offset > 0

    @property
    def has_next(self) -> bool:
        return len(self.rows) == self.limit  # the list has no total: a full page may have more after it

    def next_page(self) -> None:
        if self.has_next:
            self.offset += self.limit
            self.load()

    def previous_page(self) -> None:
        if self.has_previous:
            self.offset = max(0, self.offset - self.limit)
            self.load()

    @property
    def selected_id(self) -> int | None:
        return None if self.selected is None else self.selected["id"]

    def select(self, user_id: int | None) -> None:
        self.selected = next((row for row in self.rows if row["id"] == user_id), None)

    @property
    def selected_index(self) -> int | None:
        """Where the selected account is in this page's rows; None when it is on another page."""
        return next((index for index, row in enumerate(self.rows) if row["id"] == self.selected_id), None)

    def create(self, username: str, password: str, role: str) -> dict[str, Any]:
        """Create an account and select it, so it can be acted on even when it lands on a later page."""
        user = self.client.create_user(username.strip(), password, role)
        self.selected = user
        self.load()
        return user

    def update_selected(self, **changes: Any) -> dict[str, Any]:
        """PATCH the selected account with ``is_active``, ``role`` or ``password`` and reload the page."""
        if self.selected_id is None:
            raise ApiError(0, "select a user in the table first")
        user = self.client.update_user(self.selected_id, changes)
        self.selected = user
        self.load()
        return user


def users_view(session: UiSession) -> pn.viewable.Viewable:
    state = UsersState(session.client)
    table = pn.widgets.Tabulator(pd.DataFrame(columns=COLUMNS), disabled=True, selectable=1, show_index=False,
                                 sizing_mode="stretch_width", css_classes=["llmws-users-table"],
                                 formatters={"is_active": {"type": "tickCross"}}, titles={
                                     "is_active": "active", "created_at": "created (UTC)",
                                     "last_login_at": "last login (UTC)"})
    page_label = pn.pane.Markdown("", css_classes=["llmws-users-page"])
    previous = pn.widgets.Button(name="Previous", width=100)
    following = pn.widgets.Button(name="Next", width=100)
    message = pn.pane.Alert("", visible=False)

    chosen = pn.pane.Markdown("Select a user in the table.", css_classes=["llmws-selected-user"])
    toggle = pn.widgets.Button(name="Disable user", button_type="warning", disabled=True, width=160)
    role = pn.widgets.Select(name="Role", options=ROLES, disabled=True, width=160)
    save_role = pn.widgets.Button(name="Change role", disabled=True, width=160)
    new_password = pn.widgets.PasswordInput(name="New password", disabled=True, width=190)
    reset = pn.widgets.Button(name="Reset password", disabled=True, width=160)

    username = pn.widgets.TextInput(name="Username", width=190)
    password = pn.widgets.PasswordInput(name="Password", width=190)
    new_role = pn.widgets.Select(name="Role", options=ROLES, value="user", width=120)
    create = pn.widgets.Button(name="Create user", button_type="primary", width=140)

    def say(text: str, kind: str = "success") -> None:
        message.object, message.alert_type, message.visible = text, kind, True

    def show() -> None:
        frame = pd.DataFrame(state.rows, columns=COLUMNS)
        for column in ("created_at", "last_login_at"):  # ISO strings, shown to the second
            frame[column] = frame[column].map(lambda value: value[:19].replace("T", " ") if value else "")
        table.value = frame
        index = state.selected_index
        table.selection = [] if index is None else [index]
        first = state.offset + 1 if state.rows else state.offset
        page_label.object = f"Users {first}–{state.offset + len(state.rows)}"
        previous.disabled, following.disabled = not state.has_previous, not state.has_next
        show_selected()

    def show_selected() -> None:
        user = state.selected
        for widget in (toggle, role, save_role, new_password, reset):
            widget.disabled = user is None
        if user is None:
            chosen.object = "Select a user in the table."
            return
        status = "active" if user["is_active"] else "disabled"
        chosen.object = f"**{user['username']}** · {user['role']} · {status}"
        toggle.name = "Disable user" if user["is_active"] else "Enable user"
        toggle.button_type = "warning" if user["is_active"] else "success"
        role.value = user["role"]

    def act(action: Any, done: str) -> None:
        try:
            action()
        except ApiError as exc:
            say(exc.message, "danger")
            return
        if done:
            say(done)
        else:
            message.visible = False
        show()

    def on_select(event: param.parameterized.Event) -> None:
        rows = event.new
        if rows and rows[0] < len(state.rows) and state.rows[rows[0]]["id"] != state.selected_id:
            state.select(state.rows[rows[0]]["id"])
            show_selected()

    def on_toggle(_event: object) -> None:
        user = state.selected
        if user is not None:
            active = not user["is_active"]
            act(lambda: state.update_selected(is_active=active),
                f"{user['username']} is now {'enabled' if active else 'disabled'}.")

    def on_role(_event: object) -> None:
        act(lambda: state.update_selected(role=role.value), f"Role changed to {role.value}.")

    def on_reset(_event: object) -> None:
        act(lambda: state.update_selected(password=new_password.value), "Password reset.")
        new_password.value = ""

    def on_create(_event: object) -> None:
        act(lambda: state.create(username.value, password.value, new_role.value),
            f"Created {username.value.strip()}.")
        if message.alert_type == "success":
            username.value = password.value = ""

    table.param.watch(on_select, "selection")
    toggle.on_click(on_toggle)
    save_role.on_click(on_role)
    reset.on_click(on_reset)
    create.on_click(on_create)
    previous.on_click(lambda _event: act(state.previous_page, ""))
    following.on_click(lambda _event: act(state.next_page, ""))
    act(state.load, "")

    actions = pn.Column("### Selected user", chosen, toggle, pn.Row(role, save_role), pn.Row(new_password, reset),
                        width=420)
    creating = pn.Column("### New user", pn.Row(username, password), pn.Row(new_role, create), width=420)
    return pn.Column(message, pn.Row(pn.Column(table, pn.Row(previous, following, page_label),
                                               sizing_mode="stretch_width"),
                                     pn.Column(actions, creating)), sizing_mode="stretch_width")
