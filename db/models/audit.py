"""Audit trail: logins, failed logins, key and user changes. Also the shared record login throttling reads."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, BigIntPK, CreatedAt


class AuditLog(CreatedAt, Base):
    __tablename__ = "audit_logs"
    __table_args__ = (
        Index("ix_audit_logs_action_created", "action", "created_at"),
        Index("ix_audit_logs_created_at", "created_at"),
        # The login throttle's counts all ask about one address in a time window; an account's failures are a
        # filter within its address's, which the address throttle itself keeps few.
        Index("ix_audit_logs_ip_action_created", "ip", "action", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    action: Mapped[str] = mapped_column(String(64))
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # The name an action was about, kept even for unknown users (failed logins) or deleted ones.
    subject: Mapped[str | None] = mapped_column(String(200))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
