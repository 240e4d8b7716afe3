"""View state of the providers and models admin pages: the providers with their form and connection test, and the
catalog of model aliases with their deployments.

Plain ``param`` classes over the ``ApiClient`` (they raise its ``ApiError``), so they are tested against the real
API without a browser; the pages only turn them into widgets and show the errors.
"""

from __future__ import annotations

import html
from typing import Any

import param

from ui.client import ApiClient, ApiError

Json = dict[str, Any]
PROVIDER_KINDS = ["openai-compatible", "openai", "vllm", "tgi", "llama.cpp", "lmstudio", "ollama", "llmws"]
LOCAL = "local"  # how a deployment on the local engine is written in the deployments text


class ProvidersState(param.Parameterized):
    """The providers, the one being edited (or a new one) and the last connection test."""

    rows = param.List(default=[])
    editing_id = param.Integer(default=None, allow_None=True, doc="The provider the form saves to; None: a new one.")
    provider_name = param.String(default="")
    kind = param.Selector(default="openai-compatible", objects=PROVIDER_KINDS)
    base_url = param.String(default="")
    api_key = param.String(default="", doc="Sent only when set: the API never shows a stored key again.")
    timeout_s = param.Number(default=60.0, bounds=(0.1, 3600))
    test_result = param.Dict(default=None, allow_None=True, doc="The last POST /admin/providers/{id}/test answer.")

    def __init__(self, client: ApiClient, **params: Any) -> None:
        super().__init__(**params)
        self.client = client

    def refresh(self) -> None:
        self.rows = self.client.providers()["data"]

    def table(self) -> list[Json]:
        return [{"id": row["id"], "name": row["name"], "kind": row["kind"], "base URL": row["base_url"],
                 "active": row["is_active"], "health": (row.get("health") or {}).get("status") or "unknown",
                 "models": ", ".join((row.get("health") or {}).get("models") or [])} for row in self.rows]

    def provider(self, provider_id: int) -> Json:
        found = next((row for row in self.rows if row["id"] == provider_id), None)
        if found is None:
            raise ApiError(404, f"no provider {provider_id} (reload the list)", "not_found")
        return found

    def new(self) -> None:
        self.param.update(editing_id=None, provider_name="", kind="openai-compatible", base_url="", api_key="",
                          timeout_s=60.0)

    def edit(self, provider_id: int) -> None:
        row = self.provider(provider_id)
        self.param.update(editing_id=row["id"], provider_name=row["name"], kind=row["kind"], base_url=row["base_url"],
                          api_key="", timeout_s=float(row["timeout_s"]))

    def save(self) -> Json:
        """Create the provider, or change the one being edited; the form then holds what was saved."""
        fields: Json = {"name": self.provider_name.strip(), "kind": self.kind, "base_url": self.base_url.strip(),
                        "timeout_s": self.timeout_s}
        if self.api_key:
            fields["api_key"] = self.api_key
        if self.editing_id is None:
            saved = self.client.create_provider(fields)
        else:
            saved = self.client.update_provider(self.editing_id, fields)
        self.refresh()
        self.edit(saved["id"])
        return saved

    def set_active(self, provider_id: int, active: bool) -> Json:
        changed = self.client.update_provider(provider_id, {"is_active": active})
        self.refresh()
        return changed

    def test(self, provider_id: int) -> Json:
        self.test_result = {"provider": self.provider(provider_id)["name"], **self.client.test_provider(provider_id)}
        self.refresh()  # the test is the provider's health from now on
        return self.test_result

    def test_summary(self) -> str:
        result = self.test_result
        if result is None:
            return ""
        # Everything here comes from the upstream or the admin's input: escaped, never taken as markup.
        provider = html.escape(str(result["provider"]))
        if result["ok"]:
            models = html.escape(", ".join(result.get("models") or []) or "none")
            return f"**{provider}** answered: models {models}"
        return f"**{provider}** failed: {html.escape(str(result.get('detail') or result.get('status')))}"


class CatalogState(param.Parameterized):
    """The model aliases with their deployments, and the alias form.

    Deployments are edited as text, one a line: ``<provider name> <upstream model>`` or ``local [model]``, so an
    alias with several deployments (for failover) needs no nested form.
    """

    rows = param.List(default=[])
    providers = param.List(default=[])
    editing_id = param.Integer(default=None, allow_None=True)
    alias_name = param.String(default="")
    description = param.String(default="")
    deployments = param.String(default="", doc="One deployment a line, in the order of their priority.")

    def __init__(self, client: ApiClient, **params: Any) -> None:
        super().__init__(**params)
        self.client = client

    def refresh(self) -> None:
        self.providers = self.client.providers()["data"]
        self.rows = self.client.catalog()["data"]

    def _provider_names(self) -> dict[int, str]:
        return {provider["id"]: provider["name"] for provider in self.providers}

    def deployment_text(self, deployment: Json) -> str:
        if deployment["provider_id"] is None:
            return f"{LOCAL} {deployment['upstream_model'] or ''}".strip()
        name = self._provider_names().get(deployment["provider_id"], f"#{deployment['provider_id']}")
        return f"{name} {deployment['upstream_model']}"

    def table(self) -> list[Json]:
        return [{"id": row["id"], "name": row["name"], "description": row["description"] or "",
                 "deployments": "; ".join(self.deployment_text(d) for d in row["deployments"]),
                 "active": row["is_active"]} for row in self.rows]

    def alias(self, model_id: int) -> Json:
        found = next((row for row in self.rows if row["id"] == model_id), None)
        if found is None:
            raise ApiError(404, f"no alias {model_id} (reload the list)", "not_found")
        return found

    def new(self) -> None:
        self.param.update(editing_id=None, alias_name="", description="", deployments="")

    def edit(self, model_id: int) -> None:
        row = self.alias(model_id)
        self.param.update(editing_id=row["id"], alias_name=row["name"], description=row["description"] or "",
                          deployments="\n".join(self.deployment_text(d) for d in row["deployments"]))

    def parsed_deployments(self) -> list[Json]:
        by_name = {provider["name"]: provider["id"] for provider in self.providers}
        parsed: list[Json] = []
        for number, line in enumerate(self.deployments.splitlines()):
            words = line.split()
            if not words:
                continue
            where, model = words[0], " ".join(words[1:]) or None
            if where == LOCAL:
                parsed.append({"provider_id": None, "upstream_model": model, "priority": number})
            elif where in by_name:
                if model is None:
                    raise ApiError(400, f"line {number + 1}: name the model of {where}", "invalid_value")
                parsed.append({"provider_id": by_name[where], "upstream_model": model, "priority": number})
            else:
                raise ApiError(400, f"line {number + 1}: no provider named {where!r} (or write {LOCAL!r})",
                               "invalid_value")
        if not parsed:
            raise ApiError(400, "an alias needs at least one deployment", "invalid_value")
        return [self._with_kept_settings(deployment) for deployment in parsed]

    def _with_kept_settings(self, deployment: Json) -> Json:
        """A line naming a deployment the edited alias already has keeps what the text does not show (its context
        window and per-deployment defaults): replacing the alias must not wipe them."""
        if self.editing_id is None:
            return deployment
        for existing in self.alias(self.editing_id)["deployments"]:
            if (existing["provider_id"], existing["upstream_model"]) == (deployment["provider_id"],
                                                                         deployment["upstream_model"]):
                kept = {key: existing[key] for key in ("context_window", "defaults") if existing.get(key) is not None}
                return kept | deployment
        return deployment

    def save(self) -> Json:
        """Create the alias, or replace the one being edited (its deployments included)."""
        fields = {"name": self.alias_name.strip(), "description": self.description.strip() or None,
                  "deployments": self.parsed_deployments()}
        if self.editing_id is None:
            saved = self.client.create_alias(fields)
        else:
            # PUT replaces the whole alias: keep what this form does not show (defaults, access rules).
            kept = {key: value for key, value in self.alias(self.editing_id).items()
                    if key in ("context_window", "defaults", "allowed_roles", "allowed_users", "is_active")
                    and value is not None}
            saved = self.client.replace_alias(self.editing_id, kept | fields)
        self.refresh()
        self.edit(saved["id"])
        return saved

    def delete(self, model_id: int) -> None:
        self.client.delete_alias(model_id)
        if self.editing_id == model_id:
            self.new()
        self.refresh()
