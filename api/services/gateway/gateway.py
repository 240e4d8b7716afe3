"""The gateway's catalog and router: providers with their health, model aliases with their deployments, and the
choice of a deployment per request.

The catalog lives in the database; each replica keeps a copy, reloaded after its own admin changes and every
health interval (so another replica's changes arrive within one interval). A deployment is eligible when it is
active and its provider is active and not known unhealthy (the local engine: when a model is loaded, and the
loaded one when the deployment names one). Among the eligible, the one with the fewest requests in flight here
goes first, then by priority; the rest are the failover order.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services.accounts.principal import Principal
from api.services.errors import NotFound
from api.services.sealing import Sealer, Unsealable
from db.models import ModelDeployment, ModelEntry, Provider
from engine.errors import UpstreamUnavailable
from engine.host import ModelHost
from engine.upstream import Upstream, UpstreamConfig

log = logging.getLogger(__name__)

PROVIDER_KEY_PURPOSE = "provider-api-keys"


class ModelNotFound(NotFound):
    code = "model_not_found"


@dataclass
class ProviderState:
    id: int
    name: str
    kind: str
    upstream: Upstream
    is_active: bool
    healthy: bool | None = None  # None: not checked yet
    detail: str | None = None
    checked_at: datetime | None = None
    models: list[str] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {"status": "unknown" if self.healthy is None else ("healthy" if self.healthy else "unhealthy"),
                "detail": self.detail, "checked_at": self.checked_at.isoformat() if self.checked_at else None,
                "models": self.models}


@dataclass(frozen=True)
class Deployment:
    id: int
    provider: ProviderState | None  # None: the local engine
    upstream_model: str | None
    context_window: int | None
    defaults: dict[str, Any]
    priority: int

    @property
    def backend(self) -> str:
        return self.provider.name if self.provider else "local"


@dataclass(frozen=True)
class Alias:
    name: str
    description: str | None
    context_window: int | None
    defaults: dict[str, Any]
    allowed_roles: list[str] | None
    allowed_users: list[int] | None
    deployments: list[Deployment]
    created: int

    def allows(self, principal: Principal | None) -> bool:
        if principal is None or principal.user.is_admin:
            return True
        if self.allowed_roles is None and self.allowed_users is None:
            return True
        return principal.user.role in (self.allowed_roles or []) or principal.user.id in (self.allowed_users or [])


class Gateway:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], sealer: Sealer, host: ModelHost, *,
                 health_interval_s: float = 15.0) -> None:
        self.sessions = sessions
        self.sealer = sealer
        self.host = host
        self.health_interval_s = health_interval_s
        # One pool for every upstream; generous limits, since each stream holds a connection while it runs.
        self.http = httpx.AsyncClient(limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200))
        self.providers: dict[int, ProviderState] = {}
        self.aliases: dict[str, Alias] = {}
        self.in_flight: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        # Reloads overlap (the health round's, an admin change's): each takes a ticket when it starts, and one whose
        # reading is older than the catalogue already applied is dropped, so a slow reload never undoes a newer one.
        self._reload_tickets = itertools.count(1)
        self._applied_ticket = 0

    # --- the catalog ------------------------------------------------------------------------------------------

    async def reload(self) -> None:
        """The catalogue as the database holds it now; when this returns, every change committed before the call is
        in it (this reload's reading, or a later reload's that has already applied)."""
        ticket = next(self._reload_tickets)
        async with self.sessions() as session:
            providers = (await session.scalars(select(Provider))).all()
            entries = (await session.scalars(select(ModelEntry).where(ModelEntry.is_active))).all()
            deployments = (await session.scalars(select(ModelDeployment).where(ModelDeployment.is_active)
                                                 .order_by(ModelDeployment.priority, ModelDeployment.id))).all()
        if ticket < self._applied_ticket:
            return  # a reload that started after this one has applied its (newer) reading already
        self._applied_ticket = ticket
        states: dict[int, ProviderState] = {}
        for row in providers:
            config = UpstreamConfig(row.name, row.base_url, self.api_key_of(row), row.timeout_s)
            known = self.providers.get(row.id)
            state = ProviderState(row.id, row.name, row.kind, Upstream(config, self.http), row.is_active,
                                  healthy=_health(row.health_status), detail=row.health_detail,
                                  checked_at=row.health_checked_at, models=list(row.upstream_models or []))
            if known is not None and known.upstream.config == config and known.checked_at and (
                    state.checked_at is None or known.checked_at >= state.checked_at):
                state.healthy, state.detail, state.checked_at, state.models = (
                    known.healthy, known.detail, known.checked_at, known.models)
            states[row.id] = state
        by_model: dict[int, list[Deployment]] = {}
        for row in deployments:
            provider = states.get(row.provider_id) if row.provider_id is not None else None
            if row.provider_id is not None and provider is None:
                continue
            by_model.setdefault(row.model_id, []).append(Deployment(
                row.id, provider, row.upstream_model, row.context_window, dict(row.defaults or {}), row.priority))
        self.providers = states
        self.aliases = {entry.name: Alias(entry.name, entry.description, entry.context_window,
                                          dict(entry.defaults or {}), entry.allowed_roles, entry.allowed_users,
                                          by_model.get(entry.id, []), int(entry.created_at.timestamp()))
                        for entry in entries}

    def seal_api_key(self, provider_id: int, key: str) -> bytes:
        return self.sealer.seal(key.encode(), _key_context(provider_id))

    def api_key_of(self, row: Provider) -> str | None:
        if not row.api_key_encrypted:
            return None
        try:
            return self.sealer.open(row.api_key_encrypted, _key_context(row.id)).decode()
        except Unsealable:
            log.error("provider %s: its API key does not decrypt (was LLMWS_SECRET_KEY changed?)", row.name)
            return None

    def alias(self, name: object, principal: Principal | None) -> Alias | None:
        """The alias ``name`` names, for every protocol (the one place that decides): None when it names none;
        `ModelNotFound` when it names one the caller may not use (that alias does not exist for it)."""
        alias = self.aliases.get(name) if isinstance(name, str) else None
        if alias is not None and not alias.allows(principal):
            raise ModelNotFound(f"the model '{name}' does not exist or you do not have access to it", param="model")
        return alias

    def visible(self, principal: Principal | None) -> list[Alias]:
        return [alias for alias in self.aliases.values() if alias.allows(principal)]

    # --- routing ----------------------------------------------------------------------------------------------

    def candidates(self, alias: Alias) -> list[Deployment]:
        """Eligible deployments, the least busy first."""
        eligible = [d for d in alias.deployments if self._eligible(d)]
        return sorted(eligible, key=lambda d: (self.in_flight.get(d.id, 0), d.priority, d.id))

    def _eligible(self, deployment: Deployment) -> bool:
        if deployment.provider is None:
            loaded = self.host.loaded
            return self.host.local is not None and loaded is not None and (
                deployment.upstream_model in (None, loaded.info.name))
        provider = deployment.provider
        return provider.is_active and provider.healthy is not False

    def token_counter(self) -> Callable[[str], int] | None:
        """The local model's tokenizer as a counter, for upstreams that report no usage (an estimate: another
        model's tokenizer)."""
        tokenizer = self.host.loaded.tokenizer if self.host.loaded else None
        if tokenizer is None:
            return None
        return lambda text: len(tokenizer.encode(text, add_special_tokens=False))

    def hold(self, deployment: Deployment) -> Callable[[], None]:
        """Count one request in flight on ``deployment``; the returned function ends it (calling it again does
        nothing)."""
        self.in_flight[deployment.id] = self.in_flight.get(deployment.id, 0) + 1
        held = [True]

        def release() -> None:
            if held.pop() if held else False:
                self.in_flight[deployment.id] -= 1

        return release

    # --- health -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="gateway-health")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.http.aclose()

    async def _watch(self) -> None:
        while True:
            try:
                await self.reload()
                await self.check_all()
            except Exception:  # noqa: BLE001 (the watcher must outlive a database hiccup)
                log.warning("gateway health round failed", exc_info=True)
            await asyncio.sleep(self.health_interval_s)

    async def check_all(self) -> None:
        """Probe every active provider at once, then save what they said in one transaction: a round of many
        providers (every few seconds) must not queue a write per provider behind everybody else's."""
        probed = await asyncio.gather(*(self._probe(state) for state in self.providers.values() if state.is_active))
        await self._save_health(probed)

    async def check(self, state: ProviderState) -> ProviderState:
        await self._save_health([await self._probe(state)])
        return state

    async def _probe(self, state: ProviderState) -> ProviderState:
        try:
            models = await state.upstream.list_models()
            state.healthy, state.detail, state.models = True, f"{len(models)} models", models
        except UpstreamUnavailable as exc:
            state.healthy, state.detail = False, exc.message
        state.checked_at = datetime.now(UTC)
        return state

    async def _save_health(self, states: list[ProviderState]) -> None:
        if not states:
            return
        try:
            async with self.sessions.begin() as session:
                rows = {row.id: row for row in await session.scalars(
                    select(Provider).where(Provider.id.in_([state.id for state in states])))}
                for state in states:
                    row = rows.get(state.id)
                    if row is not None:  # else deleted meanwhile
                        row.health_status = "healthy" if state.healthy else "unhealthy"
                        row.health_detail = (state.detail or "")[:500]
                        row.health_checked_at = state.checked_at
                        row.upstream_models = state.models
        except Exception:  # noqa: BLE001 (the next round tries again; the states in memory are current)
            log.warning("could not save the health of %d provider(s)", len(states), exc_info=True)

    def mark_unhealthy(self, deployment: Deployment, detail: str) -> None:
        """A request found the upstream down: stop sending it traffic until the next check says otherwise."""
        if deployment.provider is not None:
            deployment.provider.healthy, deployment.provider.detail = False, detail


def _key_context(provider_id: int) -> bytes:
    return f"provider:{provider_id}".encode()  # a key copied onto another provider's row does not open


def _health(status: str | None) -> bool | None:
    return {"healthy": True, "unhealthy": False}.get(status or "")

