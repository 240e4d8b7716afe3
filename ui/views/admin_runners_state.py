"""View state of the runners page: the launch form with its exact command preview, the runners, and the log tail
of the one selected.

A plain ``param`` class over the ``ApiClient`` (it raises its ``ApiError``), tested against the real API without a
browser; the page polls ``refresh`` and ``follow_logs`` from a periodic callback.
"""

from __future__ import annotations

from typing import Any

import param

from ui.client import ApiClient, ApiError

Json = dict[str, Any]
LOG_LINES_KEPT = 500
ALIVE = ("starting", "running")


def _optional_int(text: str, field: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ApiError(400, f"{field} must be a whole number", "invalid_value", field) from None


class RunnersState(param.Parameterized):
    templates = param.List(default=[], doc="GET /admin/runners/templates.")
    models = param.List(default=[], doc="The local models: what a runner can serve.")
    rows = param.List(default=[])
    template = param.String(default="")
    model = param.String(default="", doc="A model's path (or name) inside the model folders.")
    port = param.String(default="", doc="Empty: a free port, chosen at launch.")
    context = param.String(default="")
    extras = param.List(default=[], item_type=str)
    preview = param.Dict(default=None, allow_None=True, doc="The last POST /admin/runners/preview answer.")
    selected = param.String(default=None, allow_None=True, doc="The runner whose log is shown.")
    log = param.List(default=[], doc="The selected runner's last log lines, (number, line).")
    log_ended = param.Boolean(default=False)

    def __init__(self, client: ApiClient, **params: Any) -> None:
        super().__init__(**params)
        self.client = client

    def load(self) -> None:
        self.templates = self.client.runner_templates()["data"]
        self.models = self.client.local_models()["data"]
        available = [t["name"] for t in self.templates if t["available"]]
        if not self.template and available:
            self.template = available[0]
        if not self.model and self.models:
            self.model = self.models[0]["path"]
        self.refresh()

    def refresh(self) -> None:
        self.rows = self.client.runners()["data"]

    def template_info(self) -> Json | None:
        return next((t for t in self.templates if t["name"] == self.template), None)

    def spec(self) -> Json:
        spec: Json = {"template": self.template, "model": self.model, "extras": list(self.extras)}
        for field in ("port", "context"):
            value = _optional_int(getattr(self, field), field)
            if value is not None:
                spec[field] = value
        return spec

    def make_preview(self) -> Json:
        self.preview = self.client.preview_runner(self.spec())
        return self.preview

    def launch(self) -> Json:
        runner = self.client.launch_runner(self.spec())
        self.refresh()
        self.select(runner["id"])
        return runner

    def stop(self, runner_id: str) -> Json:
        stopped = self.client.stop_runner(runner_id)
        self.refresh()
        return stopped

    def table(self) -> list[Json]:
        return [{"id": row["id"], "name": row["name"], "template": row["template"], "status": row["status"],
                 "exit code": row["exit_code"], "uptime (s)": row["uptime_s"], "port": row["port"],
                 "restarts": row["restarts"], "provider": row["provider_id"]} for row in self.rows]

    def select(self, runner_id: str | None) -> None:
        if runner_id != self.selected:
            self.param.update(selected=runner_id, log=[], log_ended=False)

    async def follow_logs(self) -> bool:
        """Add the selected runner's new log lines; True when some arrived."""
        if self.selected is None or self.log_ended:
            return False
        after = self.log[-1][0] if self.log else 0
        lines, ended = await self.client.runner_log_tail(self.selected, after)
        if lines:
            self.log = (self.log + lines)[-LOG_LINES_KEPT:]
        self.log_ended = ended
        return bool(lines)

    def log_text(self) -> str:
        return "\n".join(line for _number, line in self.log)
