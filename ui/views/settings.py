"""The settings page: the user's password, their API keys (a new key shown once, with a copy button) and their
default model and generation settings, kept by the API as preferences."""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn

from ui.client import ApiError
from ui.shell import UiSession
from ui.views.conversation_browser import attempt
from ui.views.settings_state import ApiKeyList, PasswordForm, PreferencesForm

COPY_KEY_JS = "navigator.clipboard.writeText(key.value); button.label = 'Copied';"


def password_section(form: PasswordForm) -> pn.Column:
    current = pn.widgets.PasswordInput(name="Current password", css_classes=["llmws-current-password"], width=320)
    new = pn.widgets.PasswordInput(name="New password", css_classes=["llmws-new-password"], width=320)
    repeated = pn.widgets.PasswordInput(name="New password again", css_classes=["llmws-repeat-password"],
                                        width=320)
    change = pn.widgets.Button(name="Change password", button_type="primary", css_classes=["llmws-change-password"])
    outcome = pn.pane.Alert("", visible=False, css_classes=["llmws-password-message"])

    def tell(message: str, kind: str) -> None:
        outcome.param.update(object=message, alert_type=kind, visible=True)

    def changed(_event: Any) -> None:
        problem = form.problem(current.value, new.value, repeated.value)
        if problem:
            return tell(problem, "warning")
        try:
            form.change(current.value, new.value)
        except ApiError as exc:  # the API's own reason: wrong current password, too short, ...
            return tell(f"Not changed: {exc.message}", "danger")
        current.value = new.value = repeated.value = ""
        tell("Your password is changed; your other logins have ended.", "success")

    change.on_click(changed)
    return pn.Column("### Password", current, new, repeated, change, outcome)


def _key_frame(keys: ApiKeyList) -> pd.DataFrame:
    return pd.DataFrame([{"id": row["id"], "name": row["name"], "prefix": row["prefix"] + "…",
                          "created": str(row["created_at"])[:16].replace("T", " "),
                          "last used": str(row["last_used_at"] or "never")[:16].replace("T", " ")}
                         for row in keys.rows], columns=["id", "name", "prefix", "created", "last used"])


def api_keys_section(keys: ApiKeyList) -> pn.Column:
    name = pn.widgets.TextInput(name="New key's name", placeholder="e.g. laptop", css_classes=["llmws-key-name"],
                                width=320)
    create = pn.widgets.Button(name="Create key", button_type="primary", css_classes=["llmws-create-key"],
                               align="end")
    secret = pn.Column(visible=False, css_classes=["llmws-key-created"], sizing_mode="stretch_width")
    table = pn.widgets.Tabulator(_key_frame(keys), show_index=False, disabled=True, selectable=False,
                                 hidden_columns=["id"], buttons={"revoke": "Revoke"}, css_classes=["llmws-keys"],
                                 sizing_mode="stretch_width")
    revoking: dict[str, Any] = {}
    question = pn.pane.Str("")
    confirm = pn.widgets.Button(name="Yes, revoke it", button_type="danger", css_classes=["llmws-confirm-revoke"])
    cancel = pn.widgets.Button(name="Cancel", css_classes=["llmws-cancel-revoke"])
    asking = pn.Row(question, confirm, cancel, visible=False)

    def show_secret(*_events: Any) -> None:
        if keys.created is None:
            secret.param.update(objects=[], visible=False)
            return
        whole = keys.created["key"]
        shown = pn.widgets.TextInput(name="Your new key", value=whole, css_classes=["llmws-new-key"], width=440)
        # Read-only: an edit is put back, so what is copied is always the key.
        shown.param.watch(lambda _event: setattr(shown, "value", whole), "value")
        copy = pn.widgets.Button(name="Copy", css_classes=["llmws-copy-key"], align="end")
        copy.js_on_click(args={"key": shown, "button": copy}, code=COPY_KEY_JS)
        done = pn.widgets.Button(name="I have stored it", css_classes=["llmws-forget-key"], align="end")
        done.on_click(lambda _event: keys.forget_secret())
        secret.param.update(visible=True, objects=[
            pn.pane.Alert("This is the whole key, shown this once only: copy it now.", alert_type="warning"),
            pn.Row(shown, copy, done)])

    def revoke_clicked(event: Any) -> None:
        if 0 <= event.row < len(keys.rows):
            row = keys.rows[event.row]
            revoking["id"] = row["id"]
            question.object = f"Revoke the key {row['name']!r} ({row['prefix']}…)? Programs using it stop working."
            asking.visible = True

    def revoke_confirmed(_event: Any) -> None:
        asking.visible = False
        if "id" in revoking:
            attempt(lambda: keys.revoke(revoking.pop("id")), "Key revoked.")

    def created(_event: Any) -> None:
        if not name.value.strip():
            name.placeholder = "Give the key a name first"
            return
        if attempt(lambda: keys.create(name.value)):
            name.value = ""

    create.on_click(created)
    table.on_click(revoke_clicked, column="revoke")
    confirm.on_click(revoke_confirmed)
    cancel.on_click(lambda _event: setattr(asking, "visible", False))
    keys.param.watch(lambda _event: setattr(table, "value", _key_frame(keys)), "rows")
    keys.param.watch(show_secret, "created")
    return pn.Column("### API keys", "Keys let programs (the `openai` client, curl) use the API as you.",
                     pn.Row(name, create), secret, table, asking, sizing_mode="stretch_width")


def preferences_section(form: PreferencesForm) -> pn.Column:
    model = pn.widgets.Select(name="Default model", options=form.model_choices(), value=form.default_model or "",
                              css_classes=["llmws-pref-model"], width=320)
    temperature = pn.widgets.FloatInput(name="Temperature", value=form.temperature, start=0, end=2, step=0.1,
                                        css_classes=["llmws-pref-temperature"], width=320)
    max_tokens = pn.widgets.IntInput(name="Max tokens", value=form.max_tokens, start=1, end=32768,
                                     css_classes=["llmws-pref-max-tokens"], width=320)
    top_p = pn.widgets.FloatInput(name="Top p", value=form.top_p, start=0.01, end=1, step=0.05,
                                  css_classes=["llmws-pref-top-p"], width=320)
    prompt = pn.widgets.Select(name="System prompt", options=form.prompt_choices(),
                               value="" if form.system_prompt_id is None else form.system_prompt_id,
                               css_classes=["llmws-pref-prompt"], width=320)
    save = pn.widgets.Button(name="Save preferences", button_type="primary", css_classes=["llmws-save-preferences"])
    save.on_click(lambda _event: attempt(lambda: form.save(
        default_model=model.value, temperature=temperature.value, max_tokens=max_tokens.value, top_p=top_p.value,
        system_prompt_id=prompt.value), "Preferences saved."))
    return pn.Column("### Chat defaults", "Empty fields mean no preference: the chat page's own defaults apply.",
                     model, temperature, max_tokens, top_p, prompt, save)


def settings_view(session: UiSession) -> pn.viewable.Viewable:
    keys = ApiKeyList(session.client)
    keys.refresh()
    preferences = PreferencesForm(session.client)
    preferences.load()
    return pn.Row(
        pn.Column(password_section(PasswordForm(session.client)), preferences_section(preferences), width=420),
        pn.Column(api_keys_section(keys), sizing_mode="stretch_width"),
        sizing_mode="stretch_width")
