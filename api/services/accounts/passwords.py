"""Argon2id password hashing. Hashing is deliberately slow, so it runs in a worker thread off the event loop."""

from __future__ import annotations

import asyncio
from functools import cache

from passlib.context import CryptContext

from api.services.accounts.account_rules import MAX_PASSWORD_LENGTH, password_problem
from api.services.errors import InvalidInput

password_context = CryptContext(schemes=["argon2"], argon2__type="ID", deprecated="auto")


@cache
def _dummy_hash() -> str:
    """Verifying against this when the user does not exist keeps unknown and known usernames equally slow."""
    return password_context.hash("not-a-real-password-only-for-timing")


def check_password_policy(password: str, *, param: str = "password") -> None:
    problem = password_problem(password)
    if problem:
        code = "weak_password" if "least" in problem else "password_too_long"
        raise InvalidInput(problem, param=param, code=code)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(password_context.hash, password)


def _verify(password: str, password_hash: str | None) -> bool:
    matches = password_context.verify(password, password_hash or _dummy_hash())
    return matches and password_hash is not None


async def verify_password(password: str, password_hash: str | None) -> bool:
    """True when the password matches; always spends one Argon2 verification, even without a hash."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    return await asyncio.to_thread(_verify, password, password_hash)
