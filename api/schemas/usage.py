"""Bodies of the admin dashboard (``/admin/overview``) and the raw usage rows (``/admin/usage/logs``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from api.schemas.common import ResponseBody

UsageStatus = Literal["ok", "cancelled", "error", "rejected"]
CountSource = Literal["engine", "upstream", "estimated"]


class UserCountsOut(ResponseBody):
    total: int
    active: int
    admins: int


class DayTrafficOut(ResponseBody):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    errors: int = Field(description="Rows whose status is `error` (cancelled and rejected are not errors).")
    error_rate: float = Field(ge=0, le=1, description="errors / requests; 0 when there were no requests.")
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p50_ms: float | None


class HourTrafficOut(ResponseBody):
    hour: datetime = Field(description="The start of the UTC hour.")
    requests: int
    errors: int
    tokens: int


class OverviewOut(ResponseBody):
    users: UserCountsOut
    today: DayTrafficOut = Field(description="The current UTC day so far.")
    series: list[HourTrafficOut] = Field(description="One entry per hour, oldest first, the current hour last.")


class UsageLogOut(ResponseBody):
    id: int
    created_at: datetime
    request_id: str
    user_id: int | None
    username: str | None
    api_key_prefix: str | None
    model: str
    backend: str
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None
    latency_ms: float | None
    tokens_per_s: float | None
    status: str
    count_source: str


class UsageLogPage(ResponseBody):
    data: list[UsageLogOut]
    offset: int
    limit: int
    total: int
