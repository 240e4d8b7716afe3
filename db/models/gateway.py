"""Upstream providers and the models catalog that maps public model names to local or upstream backends."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, Timestamps
from db.types import UTCDateTime


class Provider(Timestamps, Base):
    """An OpenAI-compatible upstream; its API key is stored only AEAD-encrypted."""

    __tablename__ = "providers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    base_url: Mapped[str] = mapped_column(String(500))
    api_key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    timeout_s: Mapped[float] = mapped_column(Float, default=60.0)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    health_status: Mapped[str] = mapped_column(String(16), default="unknown")
    health_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    health_detail: Mapped[str | None] = mapped_column(String(500))
    upstream_models: Mapped[list[str] | None] = mapped_column(JSON)  # what the last health check listed
    runner_id: Mapped[str | None] = mapped_column(String(64))  # set when a runner registered it


class ModelEntry(Timestamps, Base):
    """A public model name (alias) clients ask for, with its defaults and who may use it; served by one or more
    deployments."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str | None] = mapped_column(String(500))
    context_window: Mapped[int | None] = mapped_column(Integer)
    defaults: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # system_prompt, temperature, max_tokens
    allowed_roles: Mapped[list[str] | None] = mapped_column(JSON)  # None: everyone
    allowed_users: Mapped[list[int] | None] = mapped_column(JSON)  # user ids let in besides the roles
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)


class ModelDeployment(Timestamps, Base):
    """One place an alias is served: the local engine (no provider) or a provider's upstream model."""

    __tablename__ = "model_deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    provider_id: Mapped[int | None] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"), index=True)
    upstream_model: Mapped[str | None] = mapped_column(String(200))  # None on the local engine: whatever is loaded
    context_window: Mapped[int | None] = mapped_column(Integer)
    defaults: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=0)  # lower first when in-flight counts tie
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
