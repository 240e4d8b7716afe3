"""Bodies of the API key routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, Field

from api.schemas.common import RequestBody, ResponseBody


class ApiKeyCreate(RequestBody):
    name: str = Field(min_length=1, max_length=100)
    expires_at: AwareDatetime | None = None


class ApiKeyOut(ResponseBody):
    id: int
    user_id: int
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it by; the rest is never shown again.")
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    monthly_token_quota: int | None = None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The whole key. Shown this once only: store it now.")
