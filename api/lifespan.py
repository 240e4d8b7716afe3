"""The app's services as one typed object, built in order at startup and closed at shutdown by an
``AsyncExitStack``: each close is registered right after its service exists, so teardown runs in the reverse order
of construction, and only for what was built (a startup that fails half-way closes the half that stands).

The build order is chosen for the teardown it gives: downloads stop first; the WebSocket sessions and chat streams
next (their cancelled generations still record usage), the runners and the gateway, then the usage writer, then
the model host, the database engine, and tracing last (spans of everything closed before it still go out).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.applications import Starlette

from api.openai.response_routes import ResponseRoutes
from api.services.accounts.principal_cache import PrincipalCache
from api.services.accounts.users import bootstrap_admin
from api.services.chat.streams import StreamHub
from api.services.gateway import runner_templates
from api.services.gateway.backends import Backend, Backends
from api.services.gateway.gateway import PROVIDER_KEY_PURPOSE, Gateway
from api.services.gateway.runner_templates import Template
from api.services.gateway.runners import RunnerManager
from api.services.models.downloads import DownloadJobs
from api.services.models.host import build_model_host, start_model_host
from api.services.sealing import Sealer
from api.services.usage.generation_slots import GenerationSlots
from api.services.usage.writer import UsageWriter
from api.settings import Settings, resolve_secret_key
from api.tracing import Tracing
from api.ws import buffer as ws_buffer
from api.ws.access import PendingSockets
from api.ws.hub import WsHub
from db.migrate import SchemaNotCurrent, schema_state
from db.session import create_engine, create_sessionmaker
from engine.host import ModelHost

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppServices:
    """Everything the app serves with, for as long as its lifespan runs (``app.state.services``)."""

    tracing: Tracing | None  # installed with the app (it instruments it); closed here, last
    db_engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    principal_cache: PrincipalCache
    model_host: ModelHost
    model_loading: asyncio.Task[None]  # the first model's loading: served meanwhile, /readyz says so
    usage_writer: UsageWriter
    gateway: Gateway
    backends: Backends
    runner_templates: dict[str, Template]
    runners: RunnerManager
    generation_slots: GenerationSlots
    stream_hub: StreamHub
    ws_hub: WsHub
    ws_pending: PendingSockets
    downloads: DownloadJobs
    response_routes: ResponseRoutes  # which deployment holds each stored response


def services_of(app: Starlette) -> AppServices:
    """The running app's services (its lifespan has started them)."""
    services: AppServices = app.state.services
    return services


def services_if_started(app: Starlette) -> AppServices | None:
    """The app's services, or None before its lifespan has built them (a metrics scrape may come first)."""
    return getattr(app.state, "services", None)


@asynccontextmanager
async def open_services(settings: Settings, *, extra_backends: Sequence[Backend] = (),
                        tracing: Tracing | None = None) -> AsyncIterator[AppServices]:
    """The services for ``settings``, closed when the block ends; ``extra_backends`` are served beside the local
    model (the API benchmark's zero-cost engine)."""
    async with AsyncExitStack() as stack:
        if tracing is not None:
            stack.push_async_callback(tracing.close)
        secret_key = resolve_secret_key(settings)
        templates = runner_templates.enabled(settings.runner_templates)
        engine = create_engine(settings.resolved_database_url)
        stack.push_async_callback(engine.dispose)
        schema = await schema_state(engine)
        if not schema.at_head:
            raise SchemaNotCurrent(schema)
        sessionmaker = create_sessionmaker(engine)
        principal_cache = PrincipalCache(settings.auth_cache_ttl.total_seconds())
        principal_cache.watch(sessionmaker)
        password = settings.admin_password.get_secret_value() if settings.admin_password else None
        generated = await bootstrap_admin(sessionmaker, settings.admin_username, password)
        if generated:
            _announce_generated_password(settings.admin_username, generated)

        host = build_model_host(settings)
        # Loading (or converting a GGUF, the first time) can take a while: it runs while the rest starts and the
        # API serves. Started here rather than last, so that its cancel and the host's close are one step.
        loading = asyncio.create_task(start_model_host(host))
        stack.push_async_callback(_stop_model_host, host, loading)
        usage_writer = UsageWriter(sessionmaker, interval_s=settings.usage_flush_interval.total_seconds())
        usage_writer.start()
        stack.push_async_callback(usage_writer.close)
        gateway = Gateway(sessionmaker, Sealer(secret_key, PROVIDER_KEY_PURPOSE), host,
                          health_interval_s=settings.provider_health_interval.total_seconds())
        stack.push_async_callback(gateway.close)  # before reload: its HTTP pool exists already
        await gateway.reload()
        gateway.start()
        backends = Backends(host, gateway)
        for backend in extra_backends:
            backends.register(backend)
        runners = RunnerManager(sessionmaker, gateway, settings.data_dir / "runners")
        stack.push_async_callback(runners.close)  # SIGTERM, then SIGKILL after a grace period
        stream_hub = StreamHub(sessionmaker, resume_window_s=settings.stream_resume_window.total_seconds(),
                               retention_s=settings.stream_retention.total_seconds())
        stream_hub.start()
        stack.push_async_callback(stream_hub.close)
        ws_hub = WsHub(sessionmaker, Sealer(secret_key, ws_buffer.SEALING_PURPOSE),
                       queue_length=settings.ws_queue_length, idle_expiry_s=settings.ws_session_expiry.total_seconds())
        ws_hub.start()
        stack.push_async_callback(ws_hub.close)
        downloads = DownloadJobs(
            sessionmaker, settings.download_dir, settings.download_work_dir,
            hf_token=settings.hf_token.get_secret_value() if settings.hf_token else None,
            names_in_use=lambda: [model.name for model in host.available()],
            max_bytes=settings.download_max_bytes or None, min_free_bytes=settings.download_min_free_bytes)
        stack.push_async_callback(downloads.close)

        log.info("LLMWS API ready (database %s)", engine.url.render_as_string(hide_password=True))
        yield AppServices(
            tracing=tracing, db_engine=engine, sessionmaker=sessionmaker, principal_cache=principal_cache,
            model_host=host, model_loading=loading, usage_writer=usage_writer, gateway=gateway, backends=backends,
            runner_templates=templates, runners=runners,
            generation_slots=GenerationSlots(settings.max_concurrent_per_user), stream_hub=stream_hub,
            ws_hub=ws_hub, ws_pending=PendingSockets(settings.ws_unauthenticated_per_address), downloads=downloads,
            response_routes=ResponseRoutes())


async def _stop_model_host(host: ModelHost, loading: asyncio.Task[None]) -> None:
    loading.cancel()
    await asyncio.gather(loading, return_exceptions=True)
    await host.close()


def _announce_generated_password(username: str, password: str) -> None:
    # Straight to the console, never to the log file, so the password is not kept on disk.
    print(
        "\n" + "=" * 72 + f"\nLLMWS created the first admin user '{username}' with the password:\n\n    {password}\n\n"
        "It is shown this once. Log in and change it (POST /auth/password or `llmws users set-password`).\n"
        + "=" * 72 + "\n",
        file=sys.stdout, flush=True,
    )
