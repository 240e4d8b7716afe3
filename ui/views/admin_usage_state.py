"""What the usage page shows, without a browser: the reports by day, model and user, one filtered page of the raw
rows, where their token figures come from, and the CSV export."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import param

from ui.client import ApiClient
from ui.views.token_sources import count_sources_since, source_label

REPORT_GROUPS = ("day", "model", "user")
REPORT_PERIOD = timedelta(days=30)  # the API's default period for reports
CSV_GROUPS = ["model", "day", "user", "key", "backend", "status"]
STATUSES = ["ok", "cancelled", "error", "rejected"]
ROW_COLUMNS = ["created_at", "username", "model", "backend", "prompt_tokens", "completion_tokens", "token_count",
               "status", "latency_ms", "ttft_ms", "tokens_per_s", "request_id"]


class UsageState(param.Parameterized):
    """Filters ("" is "any") and the page of ``/admin/usage/logs`` they select, plus the 30-day reports."""

    model = param.String(default="")
    status = param.String(default="")
    count_source = param.String(default="")
    user_id = param.Parameter(default="", doc="A user's id, or '' for everyone.")
    offset = param.Integer(default=0, bounds=(0, None))
    limit = param.Integer(default=25, bounds=(1, 500))
    rows = param.List(default=[])
    total = param.Integer(default=0)
    sources = param.Dict(default={}, doc="How many of the filtered rows take their figures from each source.")
    reports = param.Dict(default={}, doc="group_by -> the report's rows (last 30 days).")
    report_sources = param.Dict(default={}, doc="The reports' rows per source of their token figures.")
    csv_group_by = param.Selector(default="model", objects=CSV_GROUPS)

    def __init__(self, client: ApiClient, **params: Any) -> None:
        super().__init__(**params)
        self.client = client

    def filters(self) -> dict[str, Any]:
        return {"model": self.model, "status": self.status, "count_source": self.count_source,
                "user_id": self.user_id}

    def load_reports(self) -> None:
        user_id = self.user_id or None
        # Reports cover whole UTC days, so the rows behind them start at midnight 30 days ago.
        first_day = (datetime.now(UTC) - REPORT_PERIOD).replace(hour=0, minute=0, second=0, microsecond=0)
        self.report_sources = count_sources_since(self.client, first_day, user_id=user_id)
        self.reports = {group: self.client.usage_report(group_by=group, user_id=user_id)["data"]
                        for group in REPORT_GROUPS}

    def load_rows(self) -> None:
        page = self.client.usage_logs(self.offset, self.limit, **self.filters())
        self.rows, self.total = page["data"], page["total"]
        others = {name: value for name, value in self.filters().items() if name != "count_source"}
        self.sources = count_sources_since(self.client, **others)

    def apply_filters(self, **filters: Any) -> None:
        """New filters start again from the first page; the reports follow the user filter."""
        user_changed = "user_id" in filters and filters["user_id"] != self.user_id
        self.param.update(offset=0, **filters)
        self.load_rows()
        if user_changed:
            self.load_reports()

    def next_page(self) -> None:
        if self.offset + self.limit < self.total:
            self.offset += self.limit
            self.load_rows()

    def previous_page(self) -> None:
        if self.offset:
            self.offset = max(0, self.offset - self.limit)
            self.load_rows()

    def user_options(self) -> dict[str, Any]:
        users = self.client.users(limit=500)["data"]
        return {"All users": ""} | {user["username"]: user["id"] for user in users}

    def model_options(self) -> list[str]:
        return ["", *sorted({row["group"] for row in self.reports.get("model", []) if row["group"]})]

    def chart(self, group: str, measure: str) -> tuple[list[str], list[float]]:
        """Names and values (``requests`` or ``total_tokens``) of one report, for a bar chart."""
        rows = self.reports.get(group, [])
        return [str(row["group"]) for row in rows], [row[measure] for row in rows]

    def table_rows(self) -> list[dict[str, Any]]:
        """The page's rows as the table shows them: each with the source of its token figures spelled out."""
        return [{column: row.get(column) for column in ROW_COLUMNS}
                | {"token_count": source_label(row["count_source"]), "username": row["username"] or "(no user)",
                   "created_at": row["created_at"][:19].replace("T", " "), "latency_ms": _rounded(row["latency_ms"]),
                   "ttft_ms": _rounded(row["ttft_ms"]), "tokens_per_s": _rounded(row["tokens_per_s"], 1)}
                for row in self.rows]

    @property
    def csv_filename(self) -> str:
        return f"usage-by-{self.csv_group_by}.csv"

    def csv(self) -> str:
        return self.client.usage_csv(group_by=self.csv_group_by, user_id=self.user_id or None)


def _rounded(value: float | None, digits: int = 0) -> float | None:
    return None if value is None else round(value, digits)
