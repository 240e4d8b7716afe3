"""Health, readiness, metrics, and the error shape for failures nobody planned for."""

from __future__ import annotations

import dataclasses
import logging

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import create_async_engine

from tests.api.conftest import assert_error
from tests.support.access import bearer


async def test_healthz_and_readyz_without_a_model(client: httpx.AsyncClient, admin_token: str) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz", headers=bearer(admin_token))
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["engine"]["ok"] is False
    assert "no model found" in body["checks"]["engine"]["detail"]
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["migrations"]["ok"] is True
    assert body["checks"]["migrations"]["current"] == body["checks"]["migrations"]["head"][0]


async def test_readyz_goes_red_when_the_database_is_gone(app: FastAPI, client: httpx.AsyncClient) -> None:
    services = app.state.services
    # Port 9 (discard) has no PostgreSQL: connections are refused at once, like a database that went away.
    gone = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:9/gone")
    app.state.services = dataclasses.replace(services, db_engine=gone)
    try:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"]["ok"] is False
        assert (await client.get("/healthz")).status_code == 200
    finally:
        await gone.dispose()
        app.state.services = services


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    await client.get("/admin/users/42")
    await client.get("/admin/users/43")
    response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.labels.get("route"), sample.labels.get("status")): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples if sample.name == "llmws_http_requests_total"
    }
    assert samples[("/healthz", "200")] == 1
    assert samples[("/admin/users/{user_id}", "401")] == 2
    assert "llmws_http_request_duration_seconds_bucket" in response.text


async def test_unhandled_errors_answer_500_without_a_stack_trace(
    app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/boom-for-test")
    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://llmws.test") as raw:
        with caplog.at_level(logging.ERROR):
            response = await raw.get("/boom-for-test")
    error = assert_error(response, 500, "internal_error")
    assert error["type"] == "server_error"
    assert "secret internal detail" not in response.text and "Traceback" not in response.text
    assert "secret internal detail" in caplog.text


async def test_openapi_document_describes_the_routes(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert {"/auth/login", "/v1/keys", "/admin/users/{user_id}", "/healthz"} <= set(schema["paths"])
    assert (await client.get("/docs")).status_code == 200
