"""Bodies of the /auth routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from api.schemas.common import RequestBody, ResponseBody
from api.services.accounts.account_rules import MAX_PASSWORD_LENGTH
from db.models import Role


class LoginRequest(RequestBody):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)


class RegisterRequest(RequestBody):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(max_length=MAX_PASSWORD_LENGTH)
    email: str | None = Field(None, max_length=255, pattern=r"^[^@\s]+@[^@\s]+$")


class PasswordChangeRequest(RequestBody):
    current_password: str = Field(max_length=MAX_PASSWORD_LENGTH)
    new_password: str = Field(max_length=MAX_PASSWORD_LENGTH)


class UserOut(ResponseBody):
    id: int
    username: str
    email: str | None
    role: Role
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    monthly_token_quota: int | None = None


class MeOut(UserOut):
    credential: str = Field(description="`session` or `api_key`: what this request authenticated with.")


class TokenOut(ResponseBody):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 (a name, not a secret)
    expires_at: datetime
    user: UserOut


class Preferences(RequestBody):
    """The caller's own chat defaults; every field may be null (no preference). A PUT replaces all of them."""

    default_model: str | None = Field(None, max_length=200)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=32768)
    top_p: float | None = Field(None, gt=0, le=1)
    system_prompt_id: int | None = None
