"""WebSocket sessions and their event buffers in the database: every event a session's client is sent, sealed
(AES-GCM, bound to its session and sequence number), kept until the client acknowledges it or the session idles
out, so a client can resume on any replica, even after a restart."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.services.errors import NotFound
from api.services.sealing import Sealer, Unsealable
from db.models import WsEvent, WsSession
from db.types import utcnow

SEALING_PURPOSE = "ws-buffer"


def _context(session_id: uuid.UUID, seq: int) -> bytes:
    return f"{session_id}:{seq}".encode()


async def open_session(session: AsyncSession, user_id: int, session_id: uuid.UUID | None) -> tuple[WsSession, bool]:
    """The caller's session ``session_id`` (resumed), or a new one. Someone else's id is refused as unknown."""
    if session_id is not None:
        found = await session.get(WsSession, session_id)
        if found is None or found.user_id != user_id:
            raise NotFound("no such session", param="session_id", code="session_not_found")
        found.last_active_at = utcnow()
        return found, True
    created = WsSession(user_id=user_id, config={}, last_seq=0, acked_seq=0)
    session.add(created)
    await session.flush()
    return created, False


@dataclass(frozen=True)
class BufferedEvent:
    seq: int
    event: dict[str, Any]  # the message as sent, ``seq`` included


async def store(session: AsyncSession, sealer: Sealer, session_id: uuid.UUID, events: list[BufferedEvent]) -> None:
    """Append events (sealed) and move the session's last sequence number on. The caller commits."""
    if not events:
        return
    await session.execute(insert(WsEvent), [
        {"session_id": session_id, "seq": item.seq, "created_at": utcnow(),
         "payload": sealer.seal(json.dumps(item.event, ensure_ascii=False).encode(), _context(session_id, item.seq))}
        for item in events])
    await session.execute(update(WsSession).where(WsSession.id == session_id).values(
        last_seq=events[-1].seq, last_active_at=utcnow()))


async def events_after(session: AsyncSession, sealer: Sealer, session_id: uuid.UUID, after_seq: int
                       ) -> list[BufferedEvent]:
    """The buffered events after ``after_seq``, in order. An entry that does not open (tampered, moved, another
    key) becomes an ``error`` event in its place, so the client sees the gap was not silent."""
    rows = await session.execute(select(WsEvent.seq, WsEvent.payload).where(
        WsEvent.session_id == session_id, WsEvent.seq > after_seq).order_by(WsEvent.seq))
    found = []
    for seq, payload in rows.all():
        try:
            event = json.loads(sealer.open(payload, _context(session_id, seq)))
        except (Unsealable, ValueError):
            event = {"type": "error", "seq": seq, "code": "buffer_entry_unreadable",
                     "message": f"buffered event {seq} could not be read (tampered with or sealed under another "
                                "key); it is skipped"}
        found.append(BufferedEvent(seq, event))
    return found


async def trim(session: AsyncSession, session_id: uuid.UUID, upto_seq: int) -> int:
    """Forget the events up to ``upto_seq`` (acknowledged by the client); returns how many went."""
    removed = await session.execute(delete(WsEvent).where(WsEvent.session_id == session_id, WsEvent.seq <= upto_seq))
    await session.execute(update(WsSession).where(WsSession.id == session_id, WsSession.acked_seq < upto_seq)
                          .values(acked_seq=upto_seq))
    return int(removed.rowcount or 0)  # type: ignore[attr-defined]


async def expire_idle(session: AsyncSession, idle_since: datetime) -> int:
    """Delete sessions (and their buffers) nobody used since ``idle_since``."""
    idle = select(WsSession.id).where(WsSession.last_active_at < idle_since)
    await session.execute(delete(WsEvent).where(WsEvent.session_id.in_(idle)))
    removed = await session.execute(delete(WsSession).where(WsSession.last_active_at < idle_since))
    return int(removed.rowcount or 0)  # type: ignore[attr-defined]
