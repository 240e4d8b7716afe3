"""Which backend serves a model name: a gateway alias (routed over its deployments), the local model, or a
backend registered in code (the benchmarks' zero-cost engine)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from api.services.accounts.principal import Principal
from api.services.errors import ServiceError
from api.services.gateway.gateway import Alias, Gateway, ModelNotFound
from api.services.gateway.routing import RoutedClient
from engine.errors import EngineError, NoModelLoaded
from engine.host import ModelHost
from engine.interface import EngineClient


@dataclass(frozen=True)
class Backend:
    model: str  # the public name clients ask for
    kind: str  # "local", or a provider's name
    client: EngineClient
    created: int = field(default_factory=lambda: int(time.time()))
    metadata: dict[str, Any] = field(default_factory=dict)


class Backends:
    def __init__(self, host: ModelHost, gateway: Gateway | None = None) -> None:
        self.host = host
        self.gateway = gateway
        self._extra: dict[str, Backend] = {}
        self._local_created = int(time.time())

    def register(self, backend: Backend) -> None:
        """Serve another backend under its own name (the benchmarks' zero-cost engine)."""
        self._extra[backend.model] = backend

    def available(self, principal: Principal | None = None) -> list[Backend]:
        """What ``principal`` may ask for: the aliases it is allowed, then the local model (unless an alias has
        its name) and the registered backends."""
        aliases = [self._routed(alias) for alias in self.gateway.visible(principal)] if self.gateway else []
        local = self._local()
        if local is not None and self.gateway is not None and local.model in self.gateway.aliases:
            local = None
        return [*aliases, *([local] if local else []), *self._extra.values()]

    def resolve(self, name: str | None, principal: Principal | None = None) -> Backend:
        """The backend for ``name``; without a name, the local model. An alias the caller may not use does not
        exist for it."""
        local = self._local()
        if name is None and local is not None:
            name = local.model  # judged as if named: an alias of that name shadows the local model, its rules too
        alias = self.gateway.alias(name, principal) if self.gateway is not None else None
        if alias is not None:
            return self._routed(alias)
        if name in self._extra:
            return self._extra[name]
        if local is None and (name is None or not self._extra):
            raise NoModelLoaded(self.host.reason)
        if local is not None and name == local.model:
            return local
        names = ", ".join(backend.model for backend in self.available(principal)) or "none"
        raise ModelNotFound(f"the model '{name}' does not exist (available: {names})", param="model")

    def default_name(self, principal: Principal | None = None) -> str | None:
        """The model a request that names none goes to, for ``principal`` (None: there is none it may use)."""
        try:
            return self.resolve(None, principal).model
        except (ServiceError, EngineError):
            return None

    def _routed(self, alias: Alias) -> Backend:
        assert self.gateway is not None
        return Backend(model=alias.name, kind="gateway", client=RoutedClient(self.gateway, alias),
                       created=alias.created, metadata={
                           "description": alias.description, "context_window": alias.context_window,
                           "deployments": [{"backend": d.backend, "model": d.upstream_model,
                                            "context_window": d.context_window} for d in alias.deployments]})

    def _local(self) -> Backend | None:
        loaded, engine = self.host.loaded, self.host.local
        if loaded is None or engine is None:
            return None
        return Backend(model=loaded.info.name, kind="local", client=engine, created=self._local_created,
                       metadata=self.host.metadata() or {})
