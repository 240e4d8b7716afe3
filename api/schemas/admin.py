"""Bodies of the /admin routes for users and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from api.schemas.common import RequestBody, ResponseBody
from api.services.accounts.account_rules import MAX_PASSWORD_LENGTH
from db.models import Role


class AdminUserCreate(RequestBody):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(max_length=MAX_PASSWORD_LENGTH)
    role: Role = Role.USER
    email: str | None = Field(None, max_length=255, pattern=r"^[^@\s]+@[^@\s]+$")


class AdminUserUpdate(RequestBody):
    role: Role | None = None
    is_active: bool | None = None
    email: str | None = Field(None, max_length=255, pattern=r"^[^@\s]+@[^@\s]+$")
    password: str | None = Field(None, max_length=MAX_PASSWORD_LENGTH, description="Reset the user's password.")


class AuditOut(ResponseBody):
    id: int
    created_at: datetime
    action: str
    actor_user_id: int | None
    subject: str | None
    target_type: str | None
    target_id: str | None
    ip: str | None
    detail: dict[str, Any] | None


MAX_INT32 = 2**31 - 1  # the limit columns are 32-bit integers


class LimitsIn(RequestBody):
    """Limits for a user (all their keys and logins together) or one API key; null means unlimited."""

    requests_per_minute: int | None = Field(None, ge=0, le=MAX_INT32)
    tokens_per_minute: int | None = Field(None, ge=0, le=MAX_INT32)
    monthly_token_quota: int | None = Field(None, ge=0, le=MAX_INT32)


class LimitsOut(ResponseBody):
    requests_per_minute: int | None
    tokens_per_minute: int | None
    monthly_token_quota: int | None
