"""Traffic the admin console tests look at: a fresh user who has sent a few chat requests, with their usage rows
already written (the usage writer flushes about once a second, so this waits until the API lists them)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from tests.ui.stack import UiStack

USAGE_WAIT_S = 30


@dataclass(frozen=True)
class UserTraffic:
    username: str
    user_id: int
    token: str
    model: str
    requests: int


def user_with_usage(stack: UiStack, requests: int = 3, prefix: str = "metered") -> UserTraffic:
    username = stack.new_user(prefix)
    token = stack.token_for(username)
    user_id = stack.api_get("/auth/me", token)["id"]
    model = ""
    for _ in range(requests):
        answer = httpx.post(f"{stack.api.base_url}/v1/chat", json={"message": "hi", "max_tokens": 4},
                            headers={"Authorization": f"Bearer {token}"}, timeout=120)
        assert answer.status_code == 200, answer.text
        model = answer.json()["model"]
    deadline = time.monotonic() + USAGE_WAIT_S
    while stack.api_get("/admin/usage/logs", stack.admin_token, user_id=user_id)["total"] < requests:
        assert time.monotonic() < deadline, f"{username}'s usage rows did not appear"
        time.sleep(0.3)
    return UserTraffic(username, user_id, token, model, requests)


def login_status(stack: UiStack, username: str, password: str) -> int:
    return httpx.post(f"{stack.api.base_url}/auth/login", json={"username": username, "password": password},
                      timeout=30).status_code
