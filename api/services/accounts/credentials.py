"""Bearer credentials: how they are made, told apart, and hashed for storage.

Both are 256-bit random strings, so a fast SHA-256 is the right hash: there is nothing to brute-force, and the
lookup by hash stays an indexed equality. (Passwords, being guessable, get Argon2id instead.)
"""

from __future__ import annotations

import hashlib
import secrets

API_KEY_PREFIX = "sk-llmws-"
SESSION_TOKEN_PREFIX = "llmws-sess-"  # noqa: S105 (a name, not a secret)
# How much of a key is kept in clear so its owner can recognise it in a list.
VISIBLE_KEY_CHARS = len(API_KEY_PREFIX) + 6


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def new_session_token() -> str:
    return SESSION_TOKEN_PREFIX + secrets.token_urlsafe(32)


def is_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX)


def visible_prefix(api_key: str) -> str:
    return api_key[:VISIBLE_KEY_CHARS]


def credential_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
