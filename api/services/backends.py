"""Which backend serves a model name. The local model now; upstream providers join behind the same interface."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from api.services.errors import NotFound
from engine.errors import NoModelLoaded
from engine.host import ModelHost
from engine.interface import EngineClient


@dataclass(frozen=True)
class Backend:
    model: str  # the public name clients ask for
    kind: str  # "local", or a provider's name
    client: EngineClient
    created: int = field(default_factory=lambda: int(time.time()))
    metadata: dict[str, Any] = field(default_factory=dict)


class ModelNotFound(NotFound):
    code = "model_not_found"


class Backends:
    def __init__(self, host: ModelHost) -> None:
        self.host = host
        self._extra: dict[str, Backend] = {}
        self._local_created = int(time.time())

    def register(self, backend: Backend) -> None:
        """Serve another backend under its own name (benchmarks' zero-cost engine now, providers later)."""
        self._extra[backend.model] = backend

    def available(self) -> list[Backend]:
        local = self._local()
        return [*([local] if local else []), *self._extra.values()]

    def resolve(self, name: str | None) -> Backend:
        """The backend for ``name``; without a name, the local model."""
        if name in self._extra:
            return self._extra[name]
        local = self._local()
        if local is None and (name is None or not self._extra):
            raise NoModelLoaded(self.host.reason)
        if local is not None and name in (None, local.model):
            return local
        names = ", ".join(backend.model for backend in self.available()) or "none"
        raise ModelNotFound(f"the model '{name}' does not exist (available: {names})", param="model")

    def _local(self) -> Backend | None:
        loaded, engine = self.host.loaded, self.host.local
        if loaded is None or engine is None:
            return None
        return Backend(model=loaded.info.name, kind="local", client=engine, created=self._local_created,
                       metadata=self.host.metadata() or {})
