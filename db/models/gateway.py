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


class ModelEntry(Timestamps, Base):
    """A public model name (alias) served either by the local engine (`local_path`) or by a provider."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    provider_id: Mapped[int | None] = mapped_column(
        ForeignKey("providers.id", ondelete="CASCADE"), index=True
    )
    upstream_model: Mapped[str | None] = mapped_column(String(200))
    local_path: Mapped[str | None] = mapped_column(String(1000))
    context_window: Mapped[int | None] = mapped_column(Integer)
    defaults: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    allowed_roles: Mapped[list[str] | None] = mapped_column(JSON)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
