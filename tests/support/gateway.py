"""The gateway's set-up through a live API's admin routes (providers, aliases), an OpenAI client for an account,
and the usage rows the gateway wrote."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import openai
from sqlalchemy import text

from api.settings import Settings
from db.session import create_engine
from tests.support.live import Account, LiveApi


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def add_provider(live_api: LiveApi, base_url: str, **extra: Any) -> dict[str, Any]:
    created = httpx.post(f"{live_api.base_url}/admin/providers", headers=live_api.admin,
                         json={"name": unique("prov"), "base_url": base_url, "timeout_s": 5, **extra})
    assert created.status_code == 201, created.text
    return created.json()


def add_alias(live_api: LiveApi, deployments: list[dict[str, Any]], **extra: Any) -> str:
    name = unique("alias")
    created = httpx.post(f"{live_api.base_url}/admin/models", headers=live_api.admin,
                         json={"name": name, "deployments": deployments, **extra})
    assert created.status_code == 201, created.text
    return name


def client_for(live_api: LiveApi, account: Account) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_api.base_url}/v1", api_key=account.key, max_retries=0, timeout=30)


def usage_rows(live_api: LiveApi, account: Account, count: int, within_s: float = 10) -> list[dict[str, Any]]:
    """The account's usage rows, once ``count`` are written."""
    async def read() -> list[dict[str, Any]]:
        engine = create_engine(Settings(database_url=live_api.env["LLMWS_DATABASE_URL"]).resolved_database_url)
        try:
            async with engine.connect() as connection:
                result = await connection.execute(text(
                    "SELECT model, backend, status, count_source, prompt_tokens, completion_tokens FROM usage_logs "
                    "WHERE user_id = :user ORDER BY id"), {"user": account.user_id})
                return [dict(row._mapping) for row in result]
        finally:
            await engine.dispose()

    deadline = time.monotonic() + within_s
    while len(rows := asyncio.run(read())) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    return rows
