"""Resumable native chat streams: each generation's events, kept for a while so a client (on any replica) that
reconnects with ``Last-Event-ID`` receives the rest of the same generation."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, BigIntPK, CreatedAt
from db.types import UTCDateTime


class ChatStream(CreatedAt, Base):
    __tablename__ = "chat_streams"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    model: Mapped[str] = mapped_column(String(200))
    # running, done, cancelled, error
    status: Mapped[str] = mapped_column(String(16), default="running")
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set by other replicas for the one running the generation: a cancel asked there, a client following there.
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    follower_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # After this the stream and its events are deleted; set when the stream finishes.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ChatStreamEvent(Base):
    __tablename__ = "chat_stream_events"
    __table_args__ = (UniqueConstraint("stream_id", "seq"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    stream_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("chat_streams.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    event: Mapped[str] = mapped_column(String(16))
    data: Mapped[str] = mapped_column(Text)
