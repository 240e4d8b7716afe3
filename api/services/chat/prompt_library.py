"""The prompt library: a user's own system prompts and the shared ones (which only admins create or change)."""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.services.accounts.principal import Principal
from api.services.chat.conversations import UNSET, update_fields
from api.services.errors import NotFound, PermissionDenied
from db.models import SystemPrompt


def _visible(principal: Principal):  # noqa: ANN202 (a SQL expression)
    return or_(SystemPrompt.owner_id == principal.user.id, SystemPrompt.is_shared.is_(True))


async def list_prompts(session: AsyncSession, principal: Principal, offset: int, limit: int
                       ) -> tuple[list[SystemPrompt], int]:
    query = select(SystemPrompt).where(_visible(principal))
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = await session.scalars(query.order_by(SystemPrompt.name, SystemPrompt.id).offset(offset).limit(limit))
    return list(rows), total


INPUT_PLACEHOLDER = "{input}"


async def get_prompt(session: AsyncSession, principal: Principal, prompt_id: int) -> SystemPrompt:
    prompt = await session.get(SystemPrompt, prompt_id)
    if prompt is None or not (prompt.is_shared or prompt.owner_id == principal.user.id):
        raise NotFound("no such prompt", param="prompt_id", code="prompt_not_found")
    return prompt


def _check_may_share(principal: Principal, shared: bool) -> None:
    if shared and not principal.user.is_admin:
        raise PermissionDenied("only admins create or change shared prompts", code="admin_required")


async def create_prompt(session: AsyncSession, principal: Principal, *, name: str, content: str,
                        is_shared: bool, user_template: str | None = None) -> SystemPrompt:
    _check_may_share(principal, is_shared)
    prompt = SystemPrompt(owner_id=principal.user.id, name=name, content=content, is_shared=is_shared,
                          user_template=user_template)
    session.add(prompt)
    await session.flush()
    return prompt


async def update_prompt(session: AsyncSession, principal: Principal, prompt: SystemPrompt, *, name: str = UNSET,
                        content: str = UNSET, is_shared: bool = UNSET, user_template: str | None = UNSET
                        ) -> SystemPrompt:
    _check_may_change(principal, prompt)
    if is_shared is not UNSET:
        _check_may_share(principal, is_shared)
    update_fields(prompt, {"name": name, "content": content, "is_shared": is_shared, "user_template": user_template})
    await session.flush()
    return prompt


async def delete_prompt(session: AsyncSession, principal: Principal, prompt: SystemPrompt) -> None:
    _check_may_change(principal, prompt)
    await session.delete(prompt)


def _check_may_change(principal: Principal, prompt: SystemPrompt) -> None:
    """A shared prompt reaches every user, so only admins edit, delete or unshare it, whoever created it (its
    creator may since have lost the admin role); a personal prompt is its owner's."""
    if prompt.is_shared or prompt.owner_id != principal.user.id:
        _check_may_share(principal, True)


def apply_template(template: str | None, message: str) -> str:
    """A preset's user template with the chat's message where `{input}` stands (the message alone without one)."""
    return template.replace(INPUT_PLACEHOLDER, message) if template else message
