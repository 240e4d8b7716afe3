"""The application factory: settings in, a FastAPI app out; its services built in the lifespan (``api/lifespan.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api.engine_metrics import EngineCollector
from api.errors import install_error_handlers
from api.gateway_metrics import GatewayCollector
from api.lifespan import open_services, services_if_started
from api.middleware import BodyLimitMiddleware, MetricsMiddleware, RequestMetrics, SecurityHeadersMiddleware
from api.openai import endpoint_routes as openai_endpoints
from api.openai import routes as openai
from api.openai.fast_path import GatewayFastPath
from api.openapi import build_openapi
from api.routes import admin, admin_engine, admin_gateway, admin_runners, auth, chat, health, keys, library, usage
from api.services.gateway.backends import Backend
from api.settings import Settings, load_settings
from api.tracing import install as install_tracing
from api.usage_metrics import UsageCollector
from api.ws import routes as ws

VERSION = "0.1.0"


def create_app(settings: Settings | None = None, *, extra_backends: Sequence[Backend] = ()) -> FastAPI:
    """The app; ``extra_backends`` are served beside the local model (the API benchmark's zero-cost engine)."""
    settings = settings or load_settings()
    metrics = RequestMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services(settings, extra_backends=extra_backends, tracing=app.state.tracing) as services:
            app.state.services = services
            yield

    app = FastAPI(title="LLMWS", version=VERSION, lifespan=lifespan,
                  description="Self-hosted LLM gateway: OpenAI-compatible API, native streaming chat, admin REST.")
    app.state.settings = settings
    app.state.metrics = metrics
    # Registered now, scraped whenever: before the lifespan has built the services they read nothing.
    for collector in (EngineCollector, GatewayCollector, UsageCollector):
        metrics.registry.register(collector(lambda: services_if_started(app)))
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    app.state.tracing = install_tracing(app, settings.otel_endpoint, settings.otel_service_name)
    install_error_handlers(app)
    app.add_middleware(GatewayFastPath)  # inside the body limit and the metrics, like every route
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.cors_origins:  # closed unless configured: no Access-Control-Allow-Origin for anyone
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=False,
                           allow_methods=["*"], allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
                           expose_headers=["Retry-After"], max_age=600)
    app.add_middleware(SecurityHeadersMiddleware)  # outermost: every answer carries them, preflights included
    for router in (health.router, auth.public_router, auth.router, keys.router, admin.router, admin_engine.router,
                   admin_gateway.router, admin_runners.router, openai.router, openai_endpoints.router, chat.router,
                   library.router, usage.router, ws.router):
        app.include_router(router)
    return app

