"""Who is calling: the user and the credential a request came with.

Its own module so that the modules that make one (``auth``), cache one (``principal_cache``) and look up users
(``users``, which clears the cache) can all name it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from db.models import ApiKey, User


@dataclass(frozen=True)
class Principal:
    """Who is calling, and with which credential."""

    user: User
    session_id: int | None = None
    api_key_id: int | None = None
    api_key: ApiKey | None = None  # the key row (its limits), for API-key credentials

    @property
    def credential(self) -> str:
        return "api_key" if self.api_key_id is not None else "session"
