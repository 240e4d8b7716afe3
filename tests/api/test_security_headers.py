"""Security headers on every kind of API answer, and CORS: closed by default, open to the configured origins only
(LLMWS_CORS_ORIGINS)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.settings import Settings, SettingsError
from tests.support.in_process import client_from, running_app
from tests.support.settings import settings_from_env

FOREIGN = "https://evil.example"
FRIEND = "https://app.example"
PREFLIGHT = {"Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type"}


def assert_security_headers(response: httpx.Response) -> None:
    where = (response.request.method, response.request.url.path, response.status_code)
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert response.headers.get("referrer-policy") == "no-referrer", where
    assert response.headers.get("x-frame-options") == "DENY", where


async def test_every_kind_of_answer_carries_the_security_headers(client: httpx.AsyncClient) -> None:
    answers = [
        await client.get("/healthz"),  # a route
        await client.get("/auth/me"),  # an error from a dependency (401)
        await client.get("/no/such/path"),  # no route (404)
        await client.post("/auth/login", content=b"x" * 2_000_000,  # refused by the body limit before any route
                          headers={"content-type": "application/json"}),
        await client.get("/docs"),  # HTML
        await client.get("/openapi.json"),
        await client.options("/v1/chat/completions", headers={"Origin": FOREIGN, **PREFLIGHT}),
    ]
    assert [answer.status_code for answer in answers[:4]] == [200, 401, 404, 413]
    for answer in answers:
        assert_security_headers(answer)


async def test_cors_is_closed_by_default(client: httpx.AsyncClient) -> None:
    preflight = await client.options("/v1/chat/completions", headers={"Origin": FOREIGN, **PREFLIGHT})
    simple = await client.get("/healthz", headers={"Origin": FOREIGN})
    for answer in (preflight, simple):
        assert not any(name.startswith("access-control-") for name in answer.headers), answer.headers


@pytest.fixture
async def cors_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings.model_copy(update={"cors_origins": [FRIEND]})) as app, client_from(app) as http:
        yield http


async def test_configured_origins_and_only_they_pass_cors(cors_client: httpx.AsyncClient) -> None:
    allowed = await cors_client.options("/v1/chat/completions", headers={"Origin": FRIEND, **PREFLIGHT})
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == FRIEND
    assert {"authorization", "content-type"} <= {
        name.strip().lower() for name in allowed.headers["access-control-allow-headers"].split(",")}
    assert "access-control-allow-credentials" not in allowed.headers  # bearer tokens, never cookies
    assert_security_headers(allowed)

    refused = await cors_client.options("/v1/chat/completions", headers={"Origin": FOREIGN, **PREFLIGHT})
    assert "access-control-allow-origin" not in refused.headers
    assert_security_headers(refused)

    simple = await cors_client.get("/auth/me", headers={"Origin": FRIEND})
    assert simple.status_code == 401 and simple.headers["access-control-allow-origin"] == FRIEND
    assert "access-control-allow-origin" not in (await cors_client.get("/healthz", headers={"Origin": FOREIGN})
                                                 ).headers


def test_cors_origins_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert settings_from_env(monkeypatch, tmp_path).cors_origins == []
    settings = settings_from_env(monkeypatch, tmp_path,
                                 LLMWS_CORS_ORIGINS=" https://app.example, http://[::1]:5006,http://localhost:3000")
    assert settings.cors_origins == ["https://app.example", "http://[::1]:5006", "http://localhost:3000"]


@pytest.mark.parametrize("value", ["https://app.example/", "app.example", "https://app.example/path", "ftp://x.y"])
def test_a_malformed_cors_origin_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        settings_from_env(monkeypatch, tmp_path, LLMWS_CORS_ORIGINS=value)
    assert "LLMWS_CORS_ORIGINS" in str(raised.value)
