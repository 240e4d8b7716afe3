"""Every call the UI makes to the API goes through here."""

from __future__ import annotations

from typing import Any

import httpx


class ApiClient:
    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 10.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s)

    def readiness(self) -> dict[str, Any]:
        """The API's /readyz report, or an ``unreachable`` report when the API does not answer."""
        try:
            return self._http.get("/readyz").json()
        except (httpx.HTTPError, ValueError) as exc:
            return {"status": "unreachable", "detail": type(exc).__name__}
