"""View state of the settings page: the password form, the user's API keys (a new key's secret is kept only until
it has been shown) and their chat preferences. Tested against the real API without a browser."""

from __future__ import annotations

from typing import Any

import param

from ui.client import ApiClient

Json = dict[str, Any]
NO_PREFERENCE = "(no preference)"
PREFERENCE_FIELDS = ("default_model", "temperature", "max_tokens", "top_p", "system_prompt_id")


class PasswordForm(param.Parameterized):
    """Change one's own password; the API checks the current one and the new one's rules."""

    def __init__(self, client: ApiClient, **params: Any) -> None:
        super().__init__(**params)
        self.client = client

    @staticmethod
    def problem(current: str, new: str, repeated: str) -> str | None:
        """What is wrong before asking the API, or None."""
        if not current or not new:
            return "Enter your current password and a new one."
        if new != repeated:
            return "The new password and its repetition differ."
        return None

    def change(self, current: str, new: str) -> None:
        self.client.change_password(current, new)


class ApiKeyList(param.Parameterized):
    """The user's live API keys; ``created`` holds the whole secret of the key just made, to be shown once."""

    rows = param.List(default=[])
    created = param.Dict(default=None, allow_None=True)

    def __init__(self, client: ApiClient, **params: Any) -> None:
        super().__init__(**params)
        self.client = client

    def refresh(self) -> None:
        self.rows = self.client.api_keys()["data"]

    def create(self, name: str) -> Json:
        self.created = self.client.create_api_key(name.strip())
        self.refresh()
        return self.created

    def revoke(self, key_id: int) -> None:
        self.client.revoke_api_key(key_id)
        if self.created is not None and self.created["id"] == key_id:
            self.created = None
        self.refresh()

    def forget_secret(self) -> None:
        self.created = None


class PreferencesForm(param.Parameterized):
    """The user's chat defaults as stored by the API; None everywhere means no preference."""

    default_model = param.String(default=None, allow_None=True)
    temperature = param.Number(default=None, allow_None=True, bounds=(0, 2))
    max_tokens = param.Integer(default=None, allow_None=True, bounds=(1, 32768))
    top_p = param.Number(default=None, allow_None=True, bounds=(0, 1))
    system_prompt_id = param.Integer(default=None, allow_None=True)

    def __init__(self, client: ApiClient, **params: Any) -> None:
        super().__init__(**params)
        self.client = client

    def load(self) -> None:
        stored = self.client.preferences()
        self.param.update(**{field: stored.get(field) for field in PREFERENCE_FIELDS})

    def values(self) -> Json:
        return {field: getattr(self, field) for field in PREFERENCE_FIELDS}

    def save(self, **changes: Any) -> Json:
        """Store these values (the others as they are); the API replaces the whole object, so all are sent."""
        wanted = self.values() | {field: (None if value == "" else value) for field, value in changes.items()}
        stored = self.client.save_preferences(wanted)
        self.param.update(**{field: stored.get(field) for field in PREFERENCE_FIELDS})
        return stored

    # In the choices, "" stands for no preference: a select cannot show None as chosen.
    def model_choices(self) -> dict[str, str]:
        choices: dict[str, str] = {NO_PREFERENCE: ""}
        choices |= {model["id"]: model["id"] for model in self.client.models()}
        if self.default_model and self.default_model not in choices:
            choices[self.default_model] = self.default_model  # stored, though no longer served
        return choices

    def prompt_choices(self) -> dict[str, int | str]:
        choices: dict[str, int | str] = {NO_PREFERENCE: ""}
        for prompt in self.client.prompts()["data"]:
            label = prompt["name"] + (" (shared)" if prompt["is_shared"] else "")
            choices[label if label not in choices else f"{label} #{prompt['id']}"] = prompt["id"]
        return choices
