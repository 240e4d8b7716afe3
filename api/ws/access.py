"""Who may keep a WebSocket open (docs/websocket.md, "Access").

A socket that has not authenticated holds no session, but it must not be free to hold open: each client address
may have a few such sockets at once (per replica), and each has a short time to send a good ``hello``. Once
authenticated, a socket is judged as an HTTP request is, by ``auth.current_principal`` through the same principal
cache: before every message, and whenever its cached check lapses while it is quiet, so a revoke, a disable or a
new role reaches an open socket as soon as it reaches a request on the same replica.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services.accounts import auth
from api.services.accounts.credentials import credential_hash
from api.services.accounts.principal import Principal
from api.services.accounts.principal_cache import PrincipalCache

# A quiet socket looks at least this often: a change made on this replica forgets the cache entry at once, and
# the socket notices within this time (a lookup in the cache costs microseconds).
RECHECK_S = 1.0


class PendingSockets:
    """Sockets accepted but not authenticated yet, counted per client address (in this replica)."""

    def __init__(self, per_address: int) -> None:
        self.per_address = per_address
        self._counts: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        held = self._counts.get(address, 0)
        if held >= self.per_address:
            return False
        self._counts[address] = held + 1
        return True

    def release(self, address: str) -> None:
        left = self._counts.get(address, 0) - 1
        if left > 0:
            self._counts[address] = left
        else:
            self._counts.pop(address, None)


@dataclass(frozen=True)
class SocketCredential:
    """The bearer credential a socket said ``hello`` with, judged again for as long as the socket is open."""

    token: str
    hashed: str

    @classmethod
    def of(cls, token: str) -> SocketCredential:
        return cls(token, credential_hash(token))

    async def principal(self, sessions: async_sessionmaker[AsyncSession], cache: PrincipalCache) -> Principal:
        """The principal as the credential stands now; raises ``AuthenticationFailed`` (unknown, revoked,
        expired) or ``PermissionDenied`` (account disabled)."""
        cached = cache.get(self.hashed)  # the usual case, without the cost of a session (~0.8 ms, measured)
        if cached is not None:
            return cached
        async with sessions() as session:
            principal = await auth.current_principal(session, cache, self.token)
            await session.commit()  # a miss may have noted the credential's last use
        return principal

    def recheck_in(self, cache: PrincipalCache) -> float:
        """Seconds until a quiet socket should judge the credential again: when its cache entry lapses (then the
        database is asked, so another replica's revoke arrives within the cache's TTL), and every ``RECHECK_S``."""
        lapse = cache.lapses_in(self.hashed)
        return min(RECHECK_S, lapse) if lapse > 0 else RECHECK_S
