"""The application factory: settings in, a FastAPI app out; database and first admin set up in the lifespan."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api.engine_metrics import EngineCollector
from api.errors import install_error_handlers
from api.gateway_fast_path import GatewayFastPath
from api.gateway_metrics import GatewayCollector
from api.middleware import BodyLimitMiddleware, MetricsMiddleware, RequestMetrics, SecurityHeadersMiddleware
from api.openapi import build_openapi
from api.routes import (
    admin,
    admin_engine,
    admin_gateway,
    admin_runners,
    auth,
    chat,
    health,
    keys,
    library,
    openai,
    openai_endpoints,
    usage,
    ws,
)
from api.services import runner_templates, ws_buffer
from api.services.backends import Backend, Backends
from api.services.chat_streams import StreamHub
from api.services.gateway import PROVIDER_KEY_PURPOSE, Gateway
from api.services.generation_slots import GenerationSlots
from api.services.model_downloads import DownloadJobs
from api.services.model_host import build_model_host, start_model_host
from api.services.principal_cache import PrincipalCache
from api.services.response_routes import ResponseRoutes
from api.services.runners import RunnerManager
from api.services.sealing import Sealer
from api.services.usage_writer import UsageWriter
from api.services.users import bootstrap_admin
from api.services.ws_access import PendingSockets
from api.services.ws_hub import WsHub
from api.settings import Settings, load_settings, resolve_secret_key
from api.tracing import install as install_tracing
from api.usage_metrics import UsageCollector
from db.migrate import SchemaNotCurrent, schema_state
from db.session import create_engine, create_sessionmaker

log = logging.getLogger(__name__)

VERSION = "0.1.0"


def create_app(settings: Settings | None = None, *, extra_backends: Sequence[Backend] = ()) -> FastAPI:
    """The app; ``extra_backends`` are served beside the local model (the API benchmark's zero-cost engine)."""
    settings = settings or load_settings()
    metrics = RequestMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.secret_key = resolve_secret_key(settings)
        engine = create_engine(settings.resolved_database_url)
        try:
            state = await schema_state(engine)
            if not state.at_head:
                raise SchemaNotCurrent(state)
            app.state.db_engine = engine
            app.state.sessionmaker = create_sessionmaker(engine)
            app.state.principal_cache = PrincipalCache(settings.auth_cache_ttl.total_seconds())
            app.state.principal_cache.watch(app.state.sessionmaker)
            password = settings.admin_password.get_secret_value() if settings.admin_password else None
            generated = await bootstrap_admin(app.state.sessionmaker, settings.admin_username, password)
            if generated:
                _announce_generated_password(settings.admin_username, generated)
            app.state.model_host = build_model_host(settings)
            app.state.gateway = Gateway(app.state.sessionmaker, Sealer(app.state.secret_key, PROVIDER_KEY_PURPOSE),
                                        app.state.model_host,
                                        health_interval_s=settings.provider_health_interval.total_seconds())
            await app.state.gateway.reload()
            app.state.gateway.start()
            app.state.backends = Backends(app.state.model_host, app.state.gateway)
            app.state.runner_templates = runner_templates.enabled(settings.runner_templates)
            app.state.runners = RunnerManager(app.state.sessionmaker, app.state.gateway, settings.data_dir / "runners")
            for backend in extra_backends:
                app.state.backends.register(backend)
            app.state.generation_slots = GenerationSlots(settings.max_concurrent_per_user)
            app.state.usage_writer = UsageWriter(app.state.sessionmaker,
                                                 interval_s=settings.usage_flush_interval.total_seconds())
            app.state.usage_writer.start()
            app.state.stream_hub = StreamHub(app.state.sessionmaker,
                                             resume_window_s=settings.stream_resume_window.total_seconds(),
                                             retention_s=settings.stream_retention.total_seconds())
            app.state.stream_hub.start()
            app.state.ws_hub = WsHub(app.state.sessionmaker, Sealer(app.state.secret_key, ws_buffer.SEALING_PURPOSE),
                                     queue_length=settings.ws_queue_length,
                                     idle_expiry_s=settings.ws_session_expiry.total_seconds())
            app.state.ws_hub.start()
            app.state.ws_pending = PendingSockets(settings.ws_unauthenticated_per_address)
            app.state.downloads = DownloadJobs(
                app.state.sessionmaker, settings.download_dir, settings.download_work_dir,
                hf_token=settings.hf_token.get_secret_value() if settings.hf_token else None,
                names_in_use=lambda: [model.name for model in app.state.model_host.available()],
                max_bytes=settings.download_max_bytes or None, min_free_bytes=settings.download_min_free_bytes)
            # Loading (or converting a GGUF, the first time) can take a while: serve meanwhile, /readyz says so.
            app.state.model_loading = asyncio.create_task(start_model_host(app.state.model_host))
            log.info("LLMWS API ready (database %s)", engine.url.render_as_string(hide_password=True))
            yield
        finally:
            # Downloads stop; streams next (their cancelled generations still record usage), then usage, then the
            # model.
            if getattr(app.state, "downloads", None) is not None:
                await app.state.downloads.close()
            if getattr(app.state, "ws_hub", None) is not None:
                await app.state.ws_hub.close()
            if getattr(app.state, "stream_hub", None) is not None:
                await app.state.stream_hub.close()
            if getattr(app.state, "runners", None) is not None:
                await app.state.runners.close()  # SIGTERM, then SIGKILL after a grace period
            if getattr(app.state, "gateway", None) is not None:
                await app.state.gateway.close()
            if getattr(app.state, "usage_writer", None) is not None:
                await app.state.usage_writer.close()
            if getattr(app.state, "model_host", None) is not None:
                app.state.model_loading.cancel()
                await asyncio.gather(app.state.model_loading, return_exceptions=True)
                await app.state.model_host.close()
            await engine.dispose()
            if app.state.tracing is not None:  # last: spans of everything closed above go out too
                await app.state.tracing.close()

    app = FastAPI(title="LLMWS", version=VERSION, lifespan=lifespan,
                  description="Self-hosted LLM gateway: OpenAI-compatible API, native streaming chat, admin REST.")
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.response_routes = ResponseRoutes()  # which deployment holds each stored response
    metrics.registry.register(EngineCollector(app.state))
    metrics.registry.register(GatewayCollector(app.state))
    metrics.registry.register(UsageCollector(app.state))
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


def _announce_generated_password(username: str, password: str) -> None:
    # Straight to the console, never to the log file, so the password is not kept on disk.
    print(
        "\n" + "=" * 72 + f"\nLLMWS created the first admin user '{username}' with the password:\n\n    {password}\n\n"
        "It is shown this once. Log in and change it (POST /auth/password or `llmws users set-password`).\n"
        + "=" * 72 + "\n",
        file=sys.stdout, flush=True,
    )
