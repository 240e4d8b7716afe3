"""Rate limits on a live API: setting a key's or user's limits, and running inside one calendar minute."""

from __future__ import annotations

import time

import httpx

from tests.support.live import LiveApi

MODEL = "tiny-chat"  # the live API's local model
# A chat request as small as they come: what a limit counts.
HELLO = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}


def set_limits(live_api: LiveApi, path: str, **limits: int) -> None:
    answer = httpx.put(f"{live_api.base_url}/admin/{path}/limits", json=limits, headers=live_api.admin)
    assert answer.status_code == 200, answer.text


def within_one_minute(seconds_needed: float = 20) -> None:
    """Per-minute windows are calendar minutes: wait, if need be, so what follows runs inside one (a window that
    rolls over midway would let the request meant to be refused through)."""
    into = time.time() % 60
    if into > 60 - seconds_needed:
        time.sleep(60 - into + 0.1)
