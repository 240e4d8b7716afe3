"""API keys: created for their owner (shown once), listed, revoked by the owner or an admin."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.services import audit
from api.services.accounts.credentials import credential_hash, new_api_key, visible_prefix
from api.services.errors import Conflict, InvalidInput, NotFound
from db.models import ApiKey, User
from db.types import utcnow

MAX_ACTIVE_KEYS_PER_USER = 100


@dataclass(frozen=True)
class CreatedKey:
    key: str
    row: ApiKey


async def create_key(
    session: AsyncSession, owner: User, name: str, *, expires_at: datetime | None = None, ip: str | None = None
) -> CreatedKey:
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput("expires_at must be in the future", param="expires_at")
    active = select(func.count()).select_from(ApiKey).where(ApiKey.user_id == owner.id, ApiKey.revoked_at.is_(None))
    if (await session.execute(active)).scalar_one() >= MAX_ACTIVE_KEYS_PER_USER:
        raise Conflict(f"at most {MAX_ACTIVE_KEYS_PER_USER} active keys per user; revoke one first",
                       code="too_many_keys")
    key = new_api_key()
    row = ApiKey(user_id=owner.id, name=name, prefix=visible_prefix(key), key_hash=credential_hash(key),
                 expires_at=expires_at)
    session.add(row)
    await session.flush()
    audit.record(session, "api_key.created", actor_user_id=owner.id, subject=owner.username,
                 target_type="api_key", target_id=row.id, ip=ip, detail={"name": name, "prefix": row.prefix})
    return CreatedKey(key=key, row=row)


async def list_keys(
    session: AsyncSession, *, user_id: int | None = None, include_revoked: bool = True,
    offset: int = 0, limit: int = 100,
) -> Sequence[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.id.desc()).offset(offset).limit(limit)
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return (await session.execute(query)).scalars().all()


async def get_key(session: AsyncSession, key_id: int) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"no API key with id {key_id}", param="key_id")
    return key


async def revoke_key(
    session: AsyncSession, key_id: int, actor: User, *, owner_id: int | None = None, ip: str | None = None
) -> ApiKey:
    """Revoke a key. With ``owner_id`` only that user's keys are found, so others' keys look nonexistent."""
    key = await session.get(ApiKey, key_id)
    if key is None or (owner_id is not None and key.user_id != owner_id):
        raise NotFound(f"no API key with id {key_id}", param="key_id")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        audit.record(session, "api_key.revoked", actor_user_id=actor.id, subject=key.user.username,
                     target_type="api_key", target_id=key.id, ip=ip, detail={"prefix": key.prefix})
    return key
