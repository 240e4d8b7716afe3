"""Argon2id password hashing. Hashing is deliberately slow, so it runs in a worker thread off the event loop."""

from __future__ import annotations

import asyncio
from functools import cache

from passlib.context import CryptContext

from api.services.errors import InvalidInput

MIN_PASSWORD_LENGTH = 8
# Argon2 cost grows with input; a cap keeps a huge "password" from being a cheap denial of service.
MAX_PASSWORD_LENGTH = 1024

password_context = CryptContext(schemes=["argon2"], argon2__type="ID", deprecated="auto")


@cache
def _dummy_hash() -> str:
    """Verifying against this when the user does not exist keeps unknown and known usernames equally slow."""
    return password_context.hash("not-a-real-password-only-for-timing")


def check_password_policy(password: str, *, param: str = "password") -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must have at least {MIN_PASSWORD_LENGTH} characters", param=param,
                           code="weak_password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password must have at most {MAX_PASSWORD_LENGTH} characters", param=param,
                           code="password_too_long")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(password_context.hash, password)


async def verify_password(password: str, password_hash: str | None) -> bool:
    """True when the password matches; always spends one Argon2 verification, even without a hash."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    return await asyncio.to_thread(password_context.verify, password, password_hash or _dummy_hash()) and (
        password_hash is not None
    )
