"""A user's own chat defaults (model, sampling, system prompt), kept as one JSON object on their row."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.services.accounts.principal import Principal
from api.services.chat import prompt_library as prompts
from api.services.errors import AuthenticationFailed, InvalidInput, NotFound
from db.models import User


async def _own_row(session: AsyncSession, principal: Principal) -> User:
    # This session's own row, read afresh: the principal's may be a cached copy that no session writes back.
    user = await session.get(User, principal.user.id, populate_existing=True)
    if user is None:
        raise AuthenticationFailed("this account no longer exists", code="invalid_token")
    return user


async def get_preferences(session: AsyncSession, principal: Principal) -> dict[str, Any]:
    return dict((await _own_row(session, principal)).preferences or {})


async def set_preferences(session: AsyncSession, principal: Principal, preferences: dict[str, Any]
                          ) -> dict[str, Any]:
    """Replace the caller's preferences; a system prompt must be one they can use (their own or a shared one)."""
    prompt_id = preferences.get("system_prompt_id")
    if prompt_id is not None:
        try:
            await prompts.get_prompt(session, principal, prompt_id)
        except NotFound:
            raise InvalidInput(f"no prompt with id {prompt_id} in your library", param="system_prompt_id",
                               code="prompt_not_found") from None
    user = await _own_row(session, principal)
    user.preferences = dict(preferences)  # a new object, so the change is seen and written
    await session.flush()
    return dict(user.preferences)
