"""Domain errors. Each carries its meaning; ``api.errors`` alone turns them into HTTP statuses."""

from __future__ import annotations


class ServiceError(Exception):
    code = "error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidInput(ServiceError):
    code = "invalid_value"


class NotFound(ServiceError):
    code = "not_found"


class Conflict(ServiceError):
    code = "conflict"


class AuthenticationFailed(ServiceError):
    code = "invalid_credentials"


class PermissionDenied(ServiceError):
    code = "forbidden"


class RateLimited(ServiceError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int, code: str | None = None,
                 error_type: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s
        # OpenAI clients tell a rate limit from a spent quota by the error's type.
        self.error_type = error_type
