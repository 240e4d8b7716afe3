"""What makes a username or a password acceptable. Dependency-free, so settings can check the first admin's too."""

from __future__ import annotations

import re

MIN_PASSWORD_LENGTH = 8
# Argon2 cost grows with input; a cap keeps a huge "password" from being a cheap denial of service.
MAX_PASSWORD_LENGTH = 1024
USERNAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
USERNAME_RULE = "1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"


def normalize_username(username: str) -> str:
    """Usernames are compared case-insensitively: `Alice` and `alice` are one account."""
    return username.strip().lower()


def username_problem(username: str) -> str | None:
    if not USERNAME_PATTERN.fullmatch(normalize_username(username)):
        return f"a username must be {USERNAME_RULE}"
    return None


def password_problem(password: str) -> str | None:
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"password must have at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"password must have at most {MAX_PASSWORD_LENGTH} characters"
    return None
