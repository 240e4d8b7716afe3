"""Recently authenticated credentials, kept for a few seconds so that a busy client's requests skip the database
(about 4 ms a request on SQLite, most of the gateway's cost over a bare pass-through).

What is kept are detached copies of the user and API key rows, keyed by the credential's hash, until
``ttl_s`` passes or the credential itself expires, whichever is first. A commit on this replica that changes a
user, an API key or a login session (a revoke, a disable, a new password or role, new limits) forgets that user's
entries at once; another replica's change takes effect here within ``ttl_s`` at most.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from api.services.accounts.principal import Principal
from db.models import ApiKey, AuthSession, User
from db.types import utcnow

MAX_ENTRIES = 10_000
CHANGED_USERS = "llmws_auth_changed_users"


@dataclass(frozen=True)
class Entry:
    principal: Principal
    until: float  # monotonic
    expires_at: Any  # the credential's own expiry (aware datetime) or None


class PrincipalCache:
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, Entry] = {}

    def get(self, credential_hash: str) -> Principal | None:
        entry = self._entries.get(credential_hash)
        if entry is None:
            return None
        if entry.until < time.monotonic() or (entry.expires_at is not None and entry.expires_at <= utcnow()):
            self._entries.pop(credential_hash, None)
            return None
        return entry.principal

    def lapses_in(self, credential_hash: str) -> float:
        """Seconds until this credential's entry stops being trusted (0 when there is none): an open WebSocket
        checks again then, so another replica's revoke reaches it no later than it reaches a request here."""
        entry = self._entries.get(credential_hash)
        return max(0.0, entry.until - time.monotonic()) if entry is not None else 0.0

    def put(self, credential_hash: str, principal: Principal, expires_at: Any) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()  # rare; cheaper than tracking recency on every hit
        self._entries[credential_hash] = Entry(_detached(principal), time.monotonic() + self.ttl_s, expires_at)

    def forget_users(self, user_ids: set[int]) -> None:
        for credential_hash in [h for h, e in self._entries.items() if e.principal.user.id in user_ids]:
            self._entries.pop(credential_hash, None)

    def watch(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        """Forget users whose credentials or account change in a commit through ``sessions``."""
        target = sessions.kw.get("sync_session_class") or Session

        @event.listens_for(target, "before_flush")
        def _collect(session: Session, *_: object) -> None:
            changed = session.info.setdefault(CHANGED_USERS, set())
            for row in session.deleted:
                if isinstance(row, User | ApiKey | AuthSession):
                    changed.add(row.id if isinstance(row, User) else row.user_id)
            for row in session.dirty:
                if isinstance(row, User | ApiKey | AuthSession) and _meaningfully_changed(row):
                    changed.add(row.id if isinstance(row, User) else row.user_id)

        @event.listens_for(target, "after_commit")
        def _forget(session: Session) -> None:
            changed = session.info.pop(CHANGED_USERS, None)
            if changed:
                self.forget_users(changed)

        @event.listens_for(target, "after_rollback")
        def _drop(session: Session) -> None:
            session.info.pop(CHANGED_USERS, None)


def mark_changed(session: AsyncSession, user_id: int) -> None:
    """For bulk statements the flush does not see (revoking every session of a user)."""
    session.sync_session.info.setdefault(CHANGED_USERS, set()).add(user_id)


# Bookkeeping columns a request itself updates; changing them changes nobody's rights.
BOOKKEEPING = {"last_used_at", "last_login_at", "updated_at"}


def _meaningfully_changed(row: Any) -> bool:
    state = inspect(row)
    return any(attribute.history.has_changes() for attribute in state.attrs if attribute.key not in BOOKKEEPING)


def _detached(principal: Principal) -> Principal:
    """Copies that no session owns, so a later request reading them never touches another's session."""
    user = _copy(principal.user, User)
    key = _copy(principal.api_key, ApiKey) if principal.api_key is not None else None
    return replace(principal, user=user, api_key=key)


def _copy(row: Any, model: Any) -> Any:
    return model(**{column.key: getattr(row, column.key) for column in model.__table__.columns})
